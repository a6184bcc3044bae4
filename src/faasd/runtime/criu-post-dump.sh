#!/bin/sh
# CRIU action script of faasd's direct dumps (faasd.runtime.criu_dump). CRIU runs it at every action; at
# "post-dump" (images written, the dumped tasks still stopped) it tells faasd through the FIFO "ready" in
# $FAASD_POST_DUMP and waits for faasd's answer on "go" (faasd copies the sandbox's files meanwhile). The
# answer is the exit status: non-zero fails the dump and CRIU resumes the tasks. Should faasd go away, the
# read ends (no writer left) and the dump fails.
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && [ -n "$FAASD_POST_DUMP" ] || exit 0
echo > "$FAASD_POST_DUMP/ready" || exit 1
read -r answer < "$FAASD_POST_DUMP/go" || exit 1
exit "${answer:-1}"
