#!/bin/sh
# Entrypoint of the Shoal image.
#
#   run [FLAGS]      (default) set the node up on its first start, then run it
#   [FLAGS]          same as `run FLAGS` (e.g. `--bootstrap seed:7777`)
#   setup|info ...   storage-node subcommands
#   anything else    executed as is (`uplink ...`, `storage-node ...`, `sh`)
#
# Settings come from SHOAL_NODE_* variables (SHOAL_NODE_ALLOCATE, SHOAL_NODE_EXTERNAL_ADDRESS,
# SHOAL_NODE_BOOTSTRAP, ...), which storage-node reads itself: the first start writes them
# into config.toml, and later starts keep applying them over the file.
set -eu

: "${SHOAL_NODE_DIR:=/var/lib/shoal/node}"
: "${SHOAL_NODE_IDENTITY:=/var/lib/shoal/identity/identity.key}"
export SHOAL_NODE_DIR SHOAL_NODE_IDENTITY

# $@: the flags given to `run`, which `setup` takes too.
first_start() {
    config="$SHOAL_NODE_DIR/config.toml"
    if [ -f "$config" ]; then
        return 0
    fi
    if [ -f "$SHOAL_NODE_IDENTITY" ]; then
        # An identity (e.g. restored from a backup) with an empty node volume: keep the
        # identity, and let the environment give every setting.
        echo "shoal: keeping the identity $SHOAL_NODE_IDENTITY; writing $config" >&2
        mkdir -p "$SHOAL_NODE_DIR"
        echo "# Written by the container entrypoint: settings come from SHOAL_NODE_* variables." >"$config"
        return 0
    fi
    echo "shoal: first start: setting up $SHOAL_NODE_DIR (the proof of work can take a minute)" >&2
    if ! storage-node setup "$@"; then
        echo "shoal: the first-start setup failed; give at least SHOAL_NODE_ALLOCATE=SIZE (e.g. 500GB), and SHOAL_NODE_EXTERNAL_ADDRESS and SHOAL_NODE_BOOTSTRAP for a public node" >&2
        exit 64
    fi
}

if [ "$#" -eq 0 ]; then
    set -- run
fi
case "$1" in
    run)
        shift
        first_start "$@"
        exec storage-node run "$@"
        ;;
    -*)
        first_start "$@"
        exec storage-node run "$@"
        ;;
    setup | info)
        exec storage-node "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
