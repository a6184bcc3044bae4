#!/bin/sh
# CRIU action script of faasd's direct dumps (faasd.runtime.criu_dump). CRIU runs it at every action; at
# "post-dump" (images written, the dumped tasks still stopped) it tells faasd through the FIFO "ready" in
# $FAASD_POST_DUMP and waits for faasd's answer on "go" (faasd copies the sandbox's files meanwhile). The
# answer is the exit status: non-zero fails the dump and CRIU resumes the tasks. Nothing here can wait for
# ever should faasd go away: "ready" is opened read-write (never waits for a reader), the answer is read
# within $FAASD_POST_DUMP_TIMEOUT seconds, and a "go" whose writer (faasd) is gone reads as no answer.
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && [ -n "$FAASD_POST_DUMP" ] || exit 0
exec 3<>"$FAASD_POST_DUMP/ready" && echo >&3 || exit 1
answer=$(timeout "${FAASD_POST_DUMP_TIMEOUT:-120}" head -n 1 "$FAASD_POST_DUMP/go") || exit 1
exit "${answer:-1}"
