use super::*;

fn record(identity: &Identity, free_space: u64) -> pb::NodeRecord {
    let body = NodeRecord {
        public_key: *identity.public_key(),
        addresses: vec!["127.0.3.1:7777".parse().unwrap()],
        free_space,
        version: "test".into(),
        started_at_ms: 1,
        timestamp_ms: 2,
    };
    pb::NodeRecord::from(&Signed::sign(body, identity).unwrap())
}

fn checks(dht: &DhtHandle, result: &str) -> u64 {
    dht.inner
        .metrics
        .record_checks
        .with_label_values(&[result])
        .get()
}

#[tokio::test]
async fn a_record_seen_before_is_not_verified_again_but_altered_bytes_are_refused() {
    let config = DhtConfig {
        difficulty: 0,
        local_network: true,
        ..DhtConfig::default()
    };
    let dht = Dht::start(Arc::new(Identity::random()), config, Mode::Client).unwrap();
    let inner = &dht.inner;
    let peer = Identity::random();
    let good = record(&peer, 10);

    let first = inner.check_node_record("test", good.clone()).unwrap();
    let again = inner.check_node_record("test", good.clone()).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the cached record is returned");
    assert_eq!((checks(&dht, "verified"), checks(&dht, "cached")), (1, 1));

    // Same signature, another body: the cache must not vouch for it.
    let mut body_changed = good.clone();
    body_changed.free_space = 11;
    assert!(inner.check_node_record("test", body_changed).is_err());
    // Same body, another signature.
    let mut sig_changed = good.clone();
    sig_changed.signature[0] ^= 1;
    assert!(inner.check_node_record("test", sig_changed).is_err());
    // Another key's signature over the same body.
    let mut resigned = record(&Identity::random(), 10);
    resigned.public_key = good.public_key.clone();
    assert!(inner.check_node_record("test", resigned).is_err());
    assert_eq!(checks(&dht, "rejected"), 3);
    assert_eq!(checks(&dht, "verified"), 1);
    dht.shutdown().await;
}

#[tokio::test]
async fn proof_of_work_is_checked_before_a_record_is_cached() {
    let config = DhtConfig {
        difficulty: 30,
        ..DhtConfig::default()
    };
    let dht = Dht::start(Arc::new(Identity::random()), config, Mode::Client).unwrap();
    // A random key has 30 trailing zero bits with probability 2^-30.
    let weak = record(&Identity::random(), 10);
    for _ in 0..2 {
        assert!(matches!(
            dht.inner.check_node_record("test", weak.clone()),
            Err(ServeError::Work(_))
        ));
    }
    assert_eq!(checks(&dht, "cached"), 0);
    dht.shutdown().await;
}

#[tokio::test]
async fn a_public_network_refuses_records_bootstrap_entries_and_its_own_record_naming_local_addresses()
 {
    let public = DhtConfig {
        difficulty: 0,
        ..DhtConfig::default()
    };
    let dht = Dht::start(Arc::new(Identity::random()), public.clone(), Mode::Client).unwrap();
    // A signed, valid record at 127.0.3.1: refused, never cached, twice.
    let local = record(&Identity::random(), 10);
    for _ in 0..2 {
        let err = dht
            .inner
            .check_node_record("test", local.clone())
            .unwrap_err();
        assert!(matches!(err, ServeError::Address { .. }), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
    }
    assert_eq!((checks(&dht, "cached"), checks(&dht, "verified")), (0, 0));
    dht.shutdown().await;

    // A bootstrap entry at a private address.
    let private = DhtConfig {
        bootstrap: vec![(NodeId([1; 32]), "192.168.1.2:7777".parse().unwrap())],
        ..public.clone()
    };
    let err = Dht::start(Arc::new(Identity::random()), private, Mode::Client).unwrap_err();
    assert!(
        matches!(
            &err,
            DhtError::Address {
                what: "bootstrap entry",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("private"), "{err}");

    // A node that would advertise a loopback address.
    let (_tx, rx) = watch::channel(RecordFields {
        addresses: vec!["127.0.0.1:7777".parse().unwrap()],
        free_space: 1,
    });
    let err = Dht::start(Arc::new(Identity::random()), public, Mode::Node(rx)).unwrap_err();
    assert!(matches!(err, DhtError::Address { .. }), "{err}");

    // The same record and entries on a local network are fine.
    let (_tx, rx) = watch::channel(RecordFields {
        addresses: vec!["127.0.0.1:7777".parse().unwrap()],
        free_space: 1,
    });
    let dht = Dht::start(
        Arc::new(Identity::random()),
        DhtConfig {
            difficulty: 0,
            local_network: true,
            bootstrap: vec![(NodeId([1; 32]), "192.168.1.2:7777".parse().unwrap())],
            ..DhtConfig::default()
        },
        Mode::Node(rx),
    )
    .unwrap();
    assert!(dht.inner.check_node_record("test", local).is_ok());
    dht.shutdown().await;
}
