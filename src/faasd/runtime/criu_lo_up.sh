#!/bin/sh
# CRIU action script of faasd's direct restores (faasd.runtime.criu_restore): bring lo up in the restored
# network namespace before CRIU restores its sockets (an established loopback TCP connection reconnects at
# once). CRIU runs it at every stage; only setup-namespaces does anything.
[ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] || exit 0
exec nsenter -t "$CRTOOLS_INIT_PID" -n ip link set lo up
