#!/bin/sh
# Entrypoint of the Hallmark image. The first argument picks the mode:
#
#   init        create what the instance lacks (settings file, PINs and SoftHSM2
#               token when the module is SoftHSM2) and migrate the database, then
#               exit. Idempotent. Run it from ONE container at a time per shared
#               database + token: compose runs it as the one-shot `init` service.
#   serve       serve only (no init, no migration): what the app nodes run. Fails
#               with a clear message when the schema is not at the latest revision.
#   standalone  init, then serve: a single container on its own (the default).
#
# Anything else is run as a command, e.g. `hallmark hsm status` or `sh`.
# Extra arguments after `serve`/`standalone` go to `hallmark serve` (e.g. --threads 4).
set -eu

: "${HALLMARK_INSTANCE:=/var/lib/hallmark}"
export HALLMARK_INSTANCE

check_instance_writable() {
    # `hallmark init` creates the folder when missing, so check the parent then.
    dir="$HALLMARK_INSTANCE"
    [ -d "$dir" ] || dir=$(dirname "$dir")
    if ! [ -w "$dir" ]; then
        echo "error: $dir is not writable by uid $(id -u);" \
            "mount a named volume at $HALLMARK_INSTANCE, or chown a bind mount to that uid" >&2
        exit 1
    fi
}

run_init() {
    check_instance_writable
    echo "hallmark: initialising instance $HALLMARK_INSTANCE"
    hallmark init
}

run_serve() {
    exec hallmark serve --bind 0.0.0.0:8000 --workers "${HALLMARK_WORKERS:-2}" "$@"
}

mode="${1:-standalone}"
if [ "$#" -gt 0 ]; then shift; fi

case "$mode" in
    init)
        run_init
        ;;
    serve)
        run_serve "$@"
        ;;
    standalone)
        run_init
        run_serve "$@"
        ;;
    *)
        exec "$mode" "$@"
        ;;
esac
