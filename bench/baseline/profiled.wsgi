# Benchmark tool, not part of the product: the gateway's mod_wsgi application under
# cProfile, inside the daemon processes, for `bench/call_latency.py --profile-daemon DIR`.
#
# That option maps /bench/profiled to this file in the gateway's own daemon process group
# and sets, per request (SetEnv, the WSGI environ), CALLEXCHANGE_BENCH_APP (the installed
# apache/callexchange.wsgi) and CALLEXCHANGE_BENCH_PROFILE (a directory www-data may
# write). Without the latter this is the plain application. Each daemon thread profiles
# the requests it serves with a cProfile.Profile of its own (cProfile sees one thread)
# and writes its statistics to DIR/daemon-<pid>-<thread>.pstats every DUMP_EVERY
# requests; the bench merges them (pstats) once the load is over.
import cProfile
import os
import runpy
import threading

DUMP_EVERY = 50

_loaded = {}
_lock = threading.Lock()
_local = threading.local()


def _gateway(path):
    with _lock:
        if path not in _loaded:
            _loaded[path] = runpy.run_path(path)["application"]
        return _loaded[path]


def application(environ, start_response):
    app = _gateway(environ["CALLEXCHANGE_BENCH_APP"])
    directory = environ.get("CALLEXCHANGE_BENCH_PROFILE")
    if not directory:
        return app(environ, start_response)
    if not hasattr(_local, "profile"):
        _local.profile, _local.served = cProfile.Profile(), 0
    # The whole reply is produced inside the call (the app returns a one-item list).
    reply = _local.profile.runcall(lambda: list(app(environ, start_response)))
    _local.served += 1
    if _local.served % DUMP_EVERY == 0:
        _local.profile.dump_stats(os.path.join(directory, "daemon-%d-%d.pstats" % (
            os.getpid(), threading.get_ident())))
    return reply
