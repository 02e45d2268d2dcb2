//! Tests of the node's configuration (`config.rs`).

use super::*;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn documented_toml_round_trips_and_documents_every_field() {
    let mut c = Config {
        allocate: ByteSize(2 << 40),
        bootstrap: vec![format!("{}@127.0.0.2:7777", "ab".repeat(32))],
        external_address: Some("node.example.com:7777".into()),
        local_network: true,
        ..Config::default()
    };
    let text = c.to_documented_toml();
    let path = Path::new("config.toml");
    let back = resolve(
        Some((path, &text)),
        Overrides::default(),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(back, c);
    c.external_address = None;
    let text = c.to_documented_toml();
    // Every field is present (possibly commented out) right after a comment.
    let keys = toml::to_string(&Config {
        external_address: Some("x:1".into()),
        max_bytes_per_owner: Some(ByteSize(1)),
        metrics_token: Some("t".into()),
        test_address_ranges: vec!["10.77.0.0/16".into()],
        ..c.clone()
    })
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for key in keys
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
    {
        let at = lines
            .iter()
            .position(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(lines[at - 1].starts_with('#'), "{key} undocumented");
    }
    assert_eq!(
        resolve(
            Some((path, &text)),
            Overrides::default(),
            Overrides::default()
        )
        .unwrap(),
        c
    );
}

#[test]
fn flags_beat_environment_beat_file() {
    let file = "allocate = \"10MB\"\nlisten = \"127.0.0.1:1000\"\nhttp = \"127.0.0.1:1001\"\ndifficulty = 3\nlocal_network = true\n";
    let env = Overrides::from_env(vars(&[
        ("SHOAL_NODE_ALLOCATE", "2TiB"),
        ("SHOAL_NODE_LISTEN", "127.0.0.1:2000"),
        (
            "SHOAL_NODE_BOOTSTRAP",
            &format!("{A}@127.0.0.5:1, {B}@127.0.0.6:2"),
        ),
        ("SHOAL_NODE_DIRECT_IO", "false"),
        ("SHOAL_NODE_DIR", "/var/lib/shoal"),
        ("SHOAL_NODE_IDENTITY", "/identity/identity.key"),
        ("PATH", "/bin"),
    ]))
    .unwrap();
    let flags = Overrides {
        listen: Some("127.0.0.1:3000".parse().unwrap()),
        ..Overrides::default()
    };
    let c = resolve(Some((Path::new("c"), file)), env, flags).unwrap();
    assert_eq!(c.allocate, ByteSize(2 << 40));
    assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap());
    assert_eq!(c.http, "127.0.0.1:1001".parse().unwrap());
    assert_eq!(c.difficulty, 3);
    assert_eq!(
        c.bootstrap,
        vec![format!("{A}@127.0.0.5:1"), format!("{B}@127.0.0.6:2")]
    );
    assert!(!c.direct_io);
    let c = resolve(
        Some((Path::new("c"), file)),
        Overrides::default(),
        Overrides::default(),
    );
    assert!(c.unwrap().direct_io, "direct I/O is the default");
}

#[test]
fn bad_input_is_refused_with_its_name() {
    assert!(matches!(
        Overrides::from_env(vars(&[("SHOAL_NODE_ALOCATE", "1GB")])),
        Err(ConfigError::Invalid { key, .. }) if key == "SHOAL_NODE_ALOCATE"
    ));
    assert!(Overrides::from_env(vars(&[("SHOAL_NODE_ALLOCATE", "lots")])).is_err());
    assert!(Overrides::from_env(vars(&[("SHOAL_NODE_DIRECT_IO", "yes")])).is_err());
    let none = || Overrides::default();
    assert!(matches!(
        resolve(None, none(), none()),
        Err(ConfigError::NoAllocation)
    ));
    assert!(
        resolve(
            Some((Path::new("c"), "allocate = \"1GB\"\nbogus = 1\n")),
            none(),
            none()
        )
        .is_err()
    );
    let bad_bootstrap = Overrides {
        allocate: Some(ByteSize(1)),
        bootstrap: Some(vec!["no-port".into()]),
        ..none()
    };
    assert!(resolve(None, none(), bad_bootstrap).is_err());
    // A bootstrap entry must pin the node id.
    let unpinned = Overrides {
        allocate: Some(ByteSize(1)),
        bootstrap: Some(vec!["127.0.0.1:7777".into()]),
        ..none()
    };
    let err = resolve(None, none(), unpinned).unwrap_err().to_string();
    assert!(err.contains("NODEID@HOST:PORT"), "{err}");
}

#[test]
fn a_declared_test_range_is_public_for_the_node_and_nothing_else_is() {
    let file = |listen: &str, ranges: &str| {
        format!("allocate = \"1MB\"\nlisten = \"{listen}\"\ntest_address_ranges = [{ranges}]\n")
    };
    let none = || Overrides::default();
    let at = |text: String| resolve(Some((Path::new("c"), &text)), none(), none());
    let c = at(file("10.77.3.2:0", "\"10.77.0.0/16\"")).unwrap();
    assert!(!c.local_network);
    let scope = c.address_scope();
    assert!(scope.check(&"10.77.9.2:7777".parse().unwrap()).is_ok());
    // Negative: outside the range the public network's rules hold.
    assert!(scope.check(&"10.78.0.2:7777".parse().unwrap()).is_err());
    assert!(scope.check(&"127.0.0.1:7777".parse().unwrap()).is_err());
    let err = at(file("10.78.3.2:0", "\"10.77.0.0/16\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
    let err = at(file("10.77.3.2:0", "\"10.77.0.1/16\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test_address_ranges") && err.contains("host bits"),
        "{err}"
    );
}

#[test]
fn a_local_listen_address_needs_local_network_and_the_error_says_so() {
    let none = || Overrides::default();
    let at = |listen: &str, external: Option<&str>, local: Option<bool>| Overrides {
        allocate: Some(ByteSize(1)),
        listen: Some(listen.parse().unwrap()),
        external_address: external.map(str::to_owned),
        local_network: local,
        ..none()
    };
    for listen in [
        "127.0.0.1:7777",
        "10.0.0.5:7777",
        "[::1]:7777",
        "[fd00::5]:7777",
    ] {
        let err = resolve(None, none(), at(listen, None, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("--local-network"), "{err}");
        assert!(err.contains("external_address"), "{err}");
        assert!(resolve(None, none(), at(listen, None, Some(true))).is_ok());
        // Behind NAT: listening privately, advertising a public address.
        assert!(resolve(None, none(), at(listen, Some("203.0.114.7:7777"), None)).is_ok());
        assert!(
            resolve(
                None,
                none(),
                at(listen, Some("node.example.com:7777"), None)
            )
            .is_ok()
        );
    }
    // A private external address is refused the same way.
    let err = resolve(
        None,
        none(),
        at("0.0.0.0:7777", Some("192.168.1.4:7777"), None),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("external_address") && err.contains("private"),
        "{err}"
    );
    // 0.0.0.0 with nothing to advertise and a public address are fine.
    assert!(resolve(None, none(), at("0.0.0.0:7777", None, None)).is_ok());
    assert!(resolve(None, none(), at("198.51.99.1:7777", None, None)).is_ok());
    // Port 0 (chosen at start) is fine where the address is.
    assert!(resolve(None, none(), at("127.0.0.1:0", None, Some(true))).is_ok());
    assert!(resolve(None, none(), at("127.0.0.1:0", None, None)).is_err());
    // So is a bootstrap entry at a local IP.
    let local_seed = Overrides {
        bootstrap: Some(vec![format!("{A}@127.0.0.5:7777")]),
        ..at("0.0.0.0:7777", None, None)
    };
    let err = resolve(None, none(), local_seed).unwrap_err().to_string();
    assert!(
        err.contains("bootstrap") && err.contains("loopback"),
        "{err}"
    );
    // The environment sets it too.
    let env = Overrides::from_env(vars(&[("SHOAL_NODE_LOCAL_NETWORK", "true")])).unwrap();
    assert!(resolve(None, env, at("127.0.0.1:7777", None, None)).is_ok());
}
