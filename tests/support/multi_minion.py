"""
A small fleet for the rollout tests: several real salt-minions
(pytest-salt-factories) attached to one real salt-master, each with its own
real pgbouncer (in front of one shared PostgreSQL) and its own real
redis-server, all on 127.0.0.1 with free ports and their own config dirs.

Every process is one this harness started, and each is stopped by its own
handle (the factories stop their daemons by pid, ``PgBouncer.stop`` and
``RedisServer.stop`` theirs) in ``finally``, however the tests end.
"""

import contextlib
import os
import shutil
import tempfile

from saltfactories.utils import random_string

from tests.support.postgres import ADMIN_PASSWORD, ADMIN_USER, ROLES, PgBouncer
from tests.support.redis_server import RedisServer


class Host:
    """
    One minion of the fleet with its pgbouncer and redis-server.
    """

    def __init__(self, minion, pgbouncer, redis):
        self.minion = minion
        self.id = minion.id
        self.pgbouncer = pgbouncer
        self.redis = redis
        self.cli = minion.salt_call_cli(timeout=300)

    def pgbouncer_pillar(self, **settings):
        """
        The ``pgbouncer`` pillar that manages this host's pgbouncer, with
        ``settings`` over the fixture's own.
        """
        server = self.pgbouncer
        wanted = server.settings(**settings)
        wanted.pop("auth_file")  # map.jinja points it at userlist_path
        return {
            "manage_package": False,  # installed by scripts/install-system-deps
            "manage_service": False,  # no systemd here: pgbouncer runs from a pidfile
            "pidfile": server.pidfile,
            "config_path": server.ini,
            "userlist_path": server.userlist,
            "admin": server.admin,
            "databases": server.databases(),
            "settings": wanted,
            "userlist": {
                "app_md5": {"password": ROLES["app_md5"][0], "method": "md5"},
                "app_scram": {"password": ROLES["app_scram"][0], "method": "scram-sha-256"},
                "pgb_admin": ADMIN_PASSWORD,
            },
            "verifier_from": server.postgres.conninfo(),
        }

    def redis_pillar(self, **settings):
        """
        The ``redis_aof`` pillar that manages this host's redis-server.
        """
        return {"instances": {"main": {"instance": self.redis.instance, "settings": settings}}}


class Fleet:
    """
    The running fleet: ``hosts`` (list of :class:`Host`), ``glob`` (a target
    matching exactly these minions), and pillar helpers.
    """

    def __init__(self, master, asset_api, prefix, hosts):
        self.master = master
        self.asset_api = asset_api
        self.prefix = prefix
        self.glob = f"{prefix}-*"
        self.hosts = hosts
        self.run_cli = master.salt_run_cli(timeout=600)

    def host(self, minion_id):
        return next(host for host in self.hosts if host.id == minion_id)

    def set_document(self, host, document):
        """
        Replace ``host``'s whole asset-API document and refresh its pillar.
        """
        self.asset_api.set_document(host.id, document)
        ret = host.cli.run("saltutil.refresh_pillar", wait=True)
        assert ret.returncode == 0, ret


def _minion_config(root):
    return {
        "log_level_logfile": "info",
        # The operator's policy (minion config, never pillar): the fixtures'
        # files live in a temporary dir, their console user is pgb_admin.
        "opsalt": {
            "policy": {
                "allowed_paths": [root],
                "pgbouncer": {"admin_users": [ADMIN_USER], "stats_users": [ADMIN_USER]},
            }
        },
    }


@contextlib.contextmanager
def running_fleet(master, asset_api, postgres, count=3):
    """
    Start ``count`` minions on ``master``, each with its own pgbouncer and
    redis-server; yield a :class:`Fleet`; stop everything afterwards.
    """
    prefix = random_string("fleet-", uppercase=False)
    root = tempfile.mkdtemp(prefix="opsalt-fleet-")
    os.chmod(root, 0o755)  # the service users traverse it
    hosts = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        for number in range(1, count + 1):
            minion_id = f"{prefix}-{number}"
            asset_api.set_document(minion_id, {})
            stack.callback(asset_api.set_document, minion_id, None)
            pgbouncer = PgBouncer(os.path.join(root, f"pgb{number}"), postgres)
            stack.callback(pgbouncer.stop)
            pgbouncer.start()
            redis = RedisServer()
            stack.callback(redis.cleanup)
            stack.callback(redis.stop)
            redis.start()
            factory = master.salt_minion_daemon(minion_id, overrides=_minion_config(root))
            stack.enter_context(factory.started())
            hosts.append(Host(factory, pgbouncer, redis))
        yield Fleet(master, asset_api, prefix, hosts)
