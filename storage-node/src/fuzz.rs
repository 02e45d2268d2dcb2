//! Fuzz targets for the storage node's decoders (see `shoal_proto::fuzz`): `config.toml`
//! resolved with `SHOAL_NODE_*` variables, and sizes as users write them.

use std::path::Path;

use shoal_proto::fuzz::{Target, text};

use crate::config::{Config, Overrides, resolve};
use crate::size::ByteSize;

/// `config.toml`, then after a line `--env--` one `SHOAL_NODE_NAME=value` per line.
fn config(d: &[u8]) {
    let t = text(d);
    let (file, env) = t.split_once("\n--env--\n").unwrap_or((&t, ""));
    let vars = env.lines().filter_map(|l| {
        l.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    });
    let env = Overrides::from_env(vars).unwrap_or_default();
    if let Ok(c) = resolve(
        Some((Path::new("config.toml"), file)),
        env,
        Overrides::default(),
    ) {
        // What `setup` writes must read back as the same settings.
        let again = resolve(
            Some((Path::new("config.toml"), &c.to_documented_toml())),
            Overrides::default(),
            Overrides::default(),
        );
        assert!(again.is_ok(), "{c:?} does not read back: {again:?}");
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    let mut documented = Config {
        allocate: ByteSize(1 << 40),
        local_network: true,
        bootstrap: vec![format!(
            "{}@127.0.0.1:7777",
            shoal_proto::fuzz::seeds::identity().node_id()
        )],
        ..Config::default()
    }
    .to_documented_toml();
    documented.push_str(
        "\n--env--\nSHOAL_NODE_ALLOCATE=2TB\nSHOAL_NODE_BOOTSTRAP=a@b:1,c@d:2\nSHOAL_NODE_LISTEN=127.0.0.1:0\n",
    );
    vec![documented.into_bytes()]
}

fn size(d: &[u8]) {
    if let Ok(s) = text(d).parse::<ByteSize>() {
        let _ = s.human();
        assert_eq!(
            s.to_string().parse::<ByteSize>().ok(),
            Some(s),
            "{s} does not parse back"
        );
    }
}

fn size_seeds() -> Vec<Vec<u8>> {
    ["1TB", "512 MiB", "1.5GB", "0", "18446744073709551615"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

/// The storage node's targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "node.config",
            seeds: config_seeds,
            run: config,
        },
        Target {
            name: "node.byte_size",
            seeds: size_seeds,
            run: size,
        },
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_config_seed_resolves() {
        let seed = config_seeds().remove(0);
        let t = text(&seed).into_owned();
        let (file, _) = t.split_once("\n--env--\n").unwrap();
        let r = resolve(
            Some((Path::new("c"), file)),
            Overrides::default(),
            Overrides::default(),
        );
        assert!(r.is_ok(), "{r:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn node_decoders_give_an_error_or_a_value(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            seed in any::<u64>(),
        ) {
            shoal_proto::fuzz::check_all(&targets(), &raw, seed, 16);
        }
    }
}
