"""
pgbench select-only with a new connection per transaction (``-C``), 8
clients: straight to PostgreSQL, then through the pgbouncer that opsalt's
``pgbouncer.userlist`` and ``pgbouncer.configured`` states deployed, in the
same run on the same cluster. Reports TPS, the ratio, the host's CPU split
(user/system/softirq/idle from /proc/stat) and PostgreSQL's own user and
system CPU seconds during each run: forking a backend per connection is
kernel time.

    .venv/bin/python bench/pgbouncer_bench.py            # 30 s per variant
    .venv/bin/python bench/pgbouncer_bench.py --duration 5
    .venv/bin/python bench/pgbouncer_bench.py --restart  # restart: online vs true

``--restart``: pgbench ``-c 8 -P 1`` in transaction pooling while
``pgbouncer.configured`` changes ``pkt_buf`` (a key RELOAD cannot change)
with ``restart: online`` (``pgbouncer -R``), then with ``restart: true``;
reports failed transactions, aborted clients and the longest run of seconds
without a transaction (target online: 0 failed, no second at 0 TPS).

Needs root (PostgreSQL and pgbouncer run as the postgres user).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.postgres import ADMIN_PASSWORD, OPERATOR_POLICY, ROLES, PgBouncer, Postgres, have_binaries

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
TARGET_RATIO = 3.0


def cpu_times():
    """
    Aggregate jiffies from /proc/stat: user (+nice), system, softirq (+irq),
    idle (+iowait), other.
    """
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    return {
        "user": user + nice,
        "system": system,
        "softirq": irq + softirq,
        "idle": idle + iowait,
        "other": sum(fields[7:8]),
    }


def postgres_cpu(postmaster_pid):
    """
    (user, system) seconds used so far by PostgreSQL: the postmaster with
    its exited children (each ``-C`` backend exits after one transaction and
    lands in cutime/cstime) plus its live children (pooled backends).
    """
    tick = os.sysconf("SC_CLK_TCK")

    def times(pid):
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        # fields[0] is the state (stat field 3): utime is field 14, ppid 4.
        return int(fields[1]), [int(v) for v in fields[11:15]]

    _ppid, (utime, stime, cutime, cstime) = times(postmaster_pid)
    user, system = utime + cutime, stime + cstime
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid, (c_utime, c_stime, _cu, _cs) = times(name)
        except OSError:
            continue
        if ppid == postmaster_pid:
            user, system = user + c_utime, system + c_stime
    return user / tick, system / tick


def cpu_split(before, after):
    delta = {k: after[k] - before[k] for k in before}
    total = sum(delta.values()) or 1
    return {k: 100.0 * v / total for k, v in delta.items()}


def pgbench(port, duration, clients, postmaster_pid, user="app_md5"):
    env = dict(os.environ, PGPASSWORD=ROLES[user][0])
    argv = [
        PGBENCH,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        user,
        "-n",
        "-S",
        "-C",
        "-c",
        str(clients),
        "-j",
        str(min(clients, os.cpu_count() or 1)),
        "-T",
        str(duration),
        "appdb",
    ]
    before, pg_before = cpu_times(), postgres_cpu(postmaster_pid)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    after, pg_after = cpu_times(), postgres_cpu(postmaster_pid)
    if proc.returncode != 0:
        raise SystemExit(f"pgbench failed: {proc.stderr.strip()[-1000:]}")
    match = re.search(r"tps = ([\d.]+)", proc.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    pg_cpu = {"user": pg_after[0] - pg_before[0], "system": pg_after[1] - pg_before[1]}
    return float(match.group(1)), cpu_split(before, after), pg_cpu, int(failed.group(1)) if failed else 0


def deploy_with_states(bouncer, postgres, workdir):
    """
    Apply opsalt's pgbouncer states (through Salt's loader) to the running
    pgbouncer: the userlist from plain passwords, then the config with a
    pool sized for the benchmark, reloaded through the console.
    """
    from tests.support.loaders import make_loaders

    # the bench's files live under /tmp and its console user is pgb_admin:
    # the operator policy of tests/support/postgres.py allows both
    states = make_loaders(workdir, id="pgbouncer-bench", opsalt={"policy": OPERATOR_POLICY}).states.pgbouncer
    ret = states.userlist(
        name=bouncer.userlist,
        users={"app_md5": {"password": ROLES["app_md5"][0], "method": "md5"}, "pgb_admin": ADMIN_PASSWORD},
        auth_type="md5",
        verifier_from=postgres.conninfo(),
        pidfile=bouncer.pidfile,
        admin=bouncer.admin,
    )
    assert ret.result is True, ret
    settings = bouncer.settings(pool_mode="session", default_pool_size=8, max_client_conn=200)
    ret = states.configured(
        name=bouncer.ini,
        databases=bouncer.databases(),
        settings=settings,
        pidfile=bouncer.pidfile,
        admin=bouncer.admin,
    )
    assert ret.result is True, ret
    return ret


def restart_run(bouncer, states, restart, duration, pkt_buf):
    """
    One pgbench run through ``bouncer`` with the restart state applied after
    a third of it: ``{failed, aborted, gap}`` (``gap``: the longest run of
    seconds with 0 TPS, counting the seconds missing at the end when every
    client gave up).
    """
    env = dict(os.environ, PGPASSWORD=ROLES["app_md5"][0])
    argv = [PGBENCH, "-n", "-c", "8", "-j", "2", "-T", str(duration), "-P", "1", "-h", "127.0.0.1"]
    argv += ["-p", str(bouncer.port), "-U", "app_md5", "appdb"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(duration / 3)
        ret = states.configured(
            name=bouncer.ini,
            databases=bouncer.databases(),
            settings=bouncer.settings(pkt_buf=pkt_buf),
            pidfile=bouncer.pidfile,
            admin=bouncer.admin,
            restart=restart,
        )
        out = proc.communicate(timeout=duration + 60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ret.result is True and ret.changes.get("restarted"), ret
    seconds = [(float(t), float(tps)) for t, tps in re.findall(r"progress: ([\d.]+) s, ([\d.]+) tps", out)]
    gap = run = 0
    for _, tps in seconds:
        run = run + 1 if tps == 0 else 0
        gap = max(gap, run)
    last = seconds[-1][0] if seconds else 0.0
    gap = max(gap, int(duration - last) if duration - last >= 1 else 0)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {
        "failed": int(failed.group(1)) if failed else None,
        "aborted": len(re.findall(r"client \d+ aborted", out)),
        "gap": gap,
    }


def restart_bench(root, postgres, duration):
    from tests.support.loaders import make_loaders

    directory = os.path.join(root, "pgb-restart")
    bouncer = PgBouncer(
        directory, postgres, extra={"unix_socket_dir": directory, "pool_mode": "transaction"}
    ).start()
    try:
        states = make_loaders(
            os.path.join(root, "salt-restart"),
            id="pgbouncer-bench-restart",
            opsalt={"policy": OPERATOR_POLICY},
        ).states.pgbouncer
        print(f"pgbench -c 8 -T {duration} -P 1 through pgbouncer (transaction pooling), pkt_buf changed")
        header = f"{'restart':<8} {'failed tx':>9} {'aborted clients':>15} {'longest 0-TPS gap s':>19}"
        print(header)
        print("-" * len(header))
        results = {}
        for restart, pkt_buf in (("online", 8192), (True, 16384)):
            result = restart_run(bouncer, states, restart, duration, pkt_buf)
            results[restart] = result
            print(
                f"{str(restart).lower():<8} {result['failed']!s:>9} {result['aborted']:>15} {result['gap']:>19}"
            )
        online = results["online"]
        met = online["failed"] == 0 and online["aborted"] == 0 and online["gap"] == 0
        print(f"online: 0 failed, no second at 0 TPS (target: {'met' if met else 'NOT met'})")
        return 0 if met else 1
    finally:
        bouncer.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--duration", type=int, default=30, help="seconds per variant (published: 30)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--restart", action="store_true", help="restart: online against restart: true")
    args = parser.parse_args()
    reason = have_binaries()
    if reason or not os.path.exists(PGBENCH):
        raise SystemExit(reason or f"{PGBENCH} missing")
    root = tempfile.mkdtemp(prefix="opsalt-pgbouncer-bench-")
    os.chmod(root, 0o755)
    postgres = Postgres(os.path.join(root, "pg"))
    bouncer = None
    try:
        postgres.start()
        env = dict(os.environ, PGPASSWORD=ROLES["app_md5"][0])
        subprocess.run(
            [
                PGBENCH,
                "-i",
                "-q",
                "-s",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                str(postgres.port),
                "-U",
                "app_md5",
                "appdb",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        if args.restart:
            return restart_bench(root, postgres, max(args.duration, 20))
        bouncer = PgBouncer(os.path.join(root, "pgb"), postgres).start()
        deploy_with_states(bouncer, postgres, os.path.join(root, "salt"))
        print(
            f"pgbench -S -C -c {args.clients} -T {args.duration}, PostgreSQL 15 on 127.0.0.1, "
            f"{os.cpu_count()} CPUs; pgbouncer deployed by pgbouncer.configured"
        )
        results = []
        for label, port in (("direct to PostgreSQL", postgres.port), ("through pgbouncer", bouncer.port)):
            time.sleep(1)
            tps, cpu, pg_cpu, failed = pgbench(port, args.duration, args.clients, postgres.proc.pid)
            results.append((label, tps, cpu, pg_cpu, failed))
        print("host CPU from /proc/stat; PostgreSQL's own CPU seconds (user/sys) from /proc/<pid>/stat")
        header = (
            f"{'variant':<22} {'TPS':>7} {'ratio':>6} {'user%':>6} {'sys%':>6} {'softirq%':>8} {'idle%':>6}"
            f" {'pg user s':>9} {'pg sys s':>8} {'pg sys/user':>11}"
        )
        print(header)
        print("-" * len(header))
        base = results[0][1]
        for label, tps, cpu, pg_cpu, failed in results:
            pg_ratio = pg_cpu["system"] / pg_cpu["user"] if pg_cpu["user"] else float("inf")
            print(
                f"{label:<22} {tps:>7.0f} {tps / base:>5.2f}x {cpu['user']:>6.1f} {cpu['system']:>6.1f} "
                f"{cpu['softirq']:>8.1f} {cpu['idle']:>6.1f} {pg_cpu['user']:>9.1f} {pg_cpu['system']:>8.1f}"
                f" {pg_ratio:>11.2f}" + (f"  ({failed} failed)" if failed else "")
            )
        ratio = results[1][1] / base
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"through pgbouncer / direct: {ratio:.2f}x (target {TARGET_RATIO:.0f}x: {verdict})")
        return 0 if ratio >= TARGET_RATIO else 1
    finally:
        if bouncer is not None:
            bouncer.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
