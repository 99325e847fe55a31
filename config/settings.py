"""Herd's settings: one module, every value from the environment (12-factor).

The defaults run the local herd (``python3 -m deploy.herd``) on loopback. With
``DJANGO_ENV=production`` nothing insecure is defaulted: the secret key must be given,
``DEBUG`` must be off, and ``manage.py check --deploy`` is clean. Each variable is
listed in ``docs/CONFIGURATION.md``.
"""

import socket
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from config import env

BASE_DIR = Path(__file__).resolve().parent.parent

ENVIRONMENT = env.string("DJANGO_ENV", "development")
if ENVIRONMENT not in {"development", "production"}:
    raise env.ConfigError(f"DJANGO_ENV={ENVIRONMENT!r} must be development or production")
PRODUCTION = ENVIRONMENT == "production"

DEBUG = env.boolean("DJANGO_DEBUG", default=False)
if PRODUCTION and DEBUG:
    raise env.ConfigError("DJANGO_DEBUG must be false when DJANGO_ENV=production")

# Refused in production (below); fine for a private development herd.
_DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production-0123456789"  # noqa: S105
if PRODUCTION:
    SECRET_KEY = env.string("DJANGO_SECRET_KEY")
    if SECRET_KEY == _DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50:
        raise env.ConfigError("DJANGO_SECRET_KEY must be a random string of at least 50 characters")
else:
    SECRET_KEY = env.string("DJANGO_SECRET_KEY", _DEVELOPMENT_SECRET_KEY)

ALLOWED_HOSTS = env.string_list("DJANGO_ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1]")
if PRODUCTION and not ALLOWED_HOSTS:
    raise env.ConfigError("DJANGO_ALLOWED_HOSTS is required when DJANGO_ENV=production")
CSRF_TRUSTED_ORIGINS = env.string_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# The release this process runs: cache keys carry it, so two releases mid-rollout never
# read each other's entries. The image sets it; the local herd uses "dev".
HERD_RELEASE = env.string("HERD_RELEASE", "dev")
# The name this process answers to in X-Served-By: the pod name on Kubernetes.
HERD_REPLICA_ID = env.string("HERD_REPLICA_ID", socket.gethostname())

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_dramatiq",
    "scaling",
    "scaling.sharding",
    "accounts",
    "catalog",
    "jobs",
    "notifications",
]

MIDDLEWARE = [
    "scaling.web.headers.ServedByMiddleware",
    "scaling.ops.metrics.RequestMetricsMiddleware",
    "scaling.web.headers.PrivateByDefaultMiddleware",
    "django.middleware.http.ConditionalGetMiddleware",
    "scaling.ops.health.HealthCheckMiddleware",
    # /metrics from an allowed network on any Host (a pod IP), before the host check.
    "scaling.ops.metrics.PodMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Outside the early answer below, so a cached page gets the header too.
    "csp.middleware.CSPMiddleware",
    # Warm anonymous pages, before the session, CSRF and auth middleware (scaling/web/edge.py).
    "scaling.web.edge.AnonymousPageMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "scaling.db.consistency.ReadYourWritesMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A RateLimited from a view or from authentication becomes a 429 (scaling/web/throttle.py).
    "scaling.web.throttle.RateLimitedMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notifications.context_processors.unread_notifications",
            ],
        },
    },
]

# --- Databases: "default" is the primary; "replica1".."replicaN" are streaming replicas.
# scaling.db.router decides which one a query uses; see docs/ARCHITECTURE.md.
_DATABASE_SCHEMES = {"postgres", "postgresql", "pgsql"}
DATABASE_URL = env.url("DATABASE_URL", "postgres://herd@127.0.0.1:55432/herd", schemes=_DATABASE_SCHEMES)
DATABASE_REPLICA_URLS = env.url_list(
    "DATABASE_REPLICA_URLS", "postgres://herd@127.0.0.1:55433/herd", schemes=_DATABASE_SCHEMES
)
_CONN_MAX_AGE = env.integer("DATABASE_CONN_MAX_AGE", 60)
_CONNECT_TIMEOUT = env.integer("DATABASE_CONNECT_TIMEOUT", 3)


def _database(url: str, read_only: bool, mirror: str = "default") -> dict:
    config = dj_database_url.parse(url, conn_max_age=_CONN_MAX_AGE, conn_health_checks=True)
    options = config.setdefault("OPTIONS", {})
    options["connect_timeout"] = _CONNECT_TIMEOUT
    options["application_name"] = f"herd:{HERD_REPLICA_ID}"[:63]
    # A connection whose packets go unanswered (a network partition) fails after
    # tcp_user_timeout (ms) instead of waiting for good; a server that is stopped but whose
    # kernel still acknowledges (SIGSTOP, a proxy) is not caught by it (docs/OPERATIONS.md).
    options.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    options["tcp_user_timeout"] = 15_000
    if read_only:
        # A stray write through a replica alias fails loudly, even when the URL
        # points at the primary (a development setup without a replica).
        options["options"] = "-c default_transaction_read_only=on"
        # Tests: the replica alias reads the test database through its own
        # connection; with a real streaming replica it sees replicated rows.
        config["TEST"] = {"MIRROR": mirror}
    return config


DATABASES = {"default": _database(DATABASE_URL, read_only=False)}
for _number, _url in enumerate(DATABASE_REPLICA_URLS, start=1):
    DATABASES[f"replica{_number}"] = _database(_url, read_only=True)

# --- Shards: per-user data (jobs, notifications) on "shard1".."shardN" (docs/SHARDING.md).
# 1024 logical shards; HERD_SHARD_MAP ("shard1:0-511,shard2:512-1023") places them at
# the first migrate (default: round robin); from then on the stored map is the truth.
SHARD_DATABASE_URLS = env.url_list(
    "SHARD_DATABASE_URLS",
    "postgres://herd@127.0.0.1:55432/herd_shard1,postgres://herd@127.0.0.1:55432/herd_shard2",
    schemes=_DATABASE_SCHEMES,
)
if not SHARD_DATABASE_URLS:
    raise env.ConfigError("SHARD_DATABASE_URLS needs at least one database URL")
SHARD_DATABASES = [f"shard{_number}" for _number in range(1, len(SHARD_DATABASE_URLS) + 1)]
for _alias, _url in zip(SHARD_DATABASES, SHARD_DATABASE_URLS, strict=True):
    DATABASES[_alias] = _database(_url, read_only=False)
# Optional: a streaming replica of each shard database, in the same order
# ("shard1_replica"..). Shard reads go there as the main database's go to "replica1"
# (scaling.sharding.shards.read_alias); empty: shard reads use the shard databases themselves.
SHARD_REPLICA_URLS = env.url_list(
    "SHARD_REPLICA_URLS",
    "postgres://herd@127.0.0.1:55433/herd_shard1,postgres://herd@127.0.0.1:55433/herd_shard2",
    schemes=_DATABASE_SCHEMES,
)
if SHARD_REPLICA_URLS and len(SHARD_REPLICA_URLS) != len(SHARD_DATABASE_URLS):
    raise env.ConfigError(f"SHARD_REPLICA_URLS needs one URL per shard database ({len(SHARD_DATABASE_URLS)}), or none")
SHARD_REPLICAS = {}
for _alias, _url in zip(SHARD_DATABASES, SHARD_REPLICA_URLS, strict=False):
    SHARD_REPLICAS[_alias] = f"{_alias}_replica"
    DATABASES[f"{_alias}_replica"] = _database(_url, read_only=True, mirror=_alias)
HERD_SHARD_MAP = env.shard_map("HERD_SHARD_MAP", SHARD_DATABASES)
# How old a process's copy of the stored shard map may get (a move waits longer before deleting).
HERD_SHARD_MAP_SECONDS = env.number("HERD_SHARD_MAP_SECONDS", 1.0)
DATABASE_ROUTERS = ["scaling.sharding.shards.ShardRouter", "scaling.db.router.PrimaryReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Replica health (scaling.db.replicas): a replica serves reads while its replay lag is
# small by time *or* by bytes; one that errors is skipped until the next check.
HERD_REPLICA_MAX_LAG_SECONDS = env.number("HERD_REPLICA_MAX_LAG_SECONDS", 30.0)
HERD_REPLICA_MAX_LAG_BYTES = env.integer("HERD_REPLICA_MAX_LAG_BYTES", 16 * 1024 * 1024)
HERD_REPLICA_CHECK_INTERVAL = env.number("HERD_REPLICA_CHECK_INTERVAL", 5.0)
# How long a replica check waits for its answer (on a connection of its own) before the
# replica counts as down ("no answer"): a hung replica stalls one request per interval this long.
HERD_REPLICA_CHECK_TIMEOUT = env.number("HERD_REPLICA_CHECK_TIMEOUT", 0.5)
# A connection to a primary busy longer than this (a statement, a health check, a COMMIT) makes
# the process ask that primary (with the check's deadline); on one found cut off, it is broken,
# not left waiting (scaling.db.stuck).
HERD_PRIMARY_STATEMENT_SECONDS = env.number("HERD_PRIMARY_STATEMENT_SECONDS", 1.0)
# A replica whose check query takes longer than this (one round trip; a replica on the
# same network answers in about a millisecond) is slow: its reads go to the primary.
HERD_REPLICA_SLOW_SECONDS = env.number("HERD_REPLICA_SLOW_SECONDS", 0.1)
# How long a user's reads must reach the LSN of their last write (scaling.db.consistency).
HERD_READ_YOUR_WRITES_SECONDS = env.integer("HERD_READ_YOUR_WRITES_SECONDS", 30)
# How long a cache fill waits for a replica to replay the position it needs before it
# reads the primary instead (scaling.cache); reads that are not fills never wait.
HERD_FILL_WAIT_SECONDS = env.number("HERD_FILL_WAIT_SECONDS", 0.1)

# The query and object caches (scaling.cache); off only to measure what they save.
HERD_CACHES_ENABLED = env.boolean("HERD_CACHES_ENABLED", default=True)

# The HAProxy edge caches a write purges, by their runtime API (host:port,...; empty: none,
# as behind a CDN; scaling/web/edge.py, docs/CACHING.md), and how long a purge may take.
HERD_EDGE_ADMIN = env.host_ports("HERD_EDGE_ADMIN")
HERD_EDGE_PURGE_TIMEOUT = env.number("HERD_EDGE_PURGE_TIMEOUT", 0.5)

# --- Redis. Two instances because eviction policy and persistence are per instance:
# "state" (noeviction, append-only file) holds what must not vanish: sessions, WAL positions, the
# Channels layer; "cache" (volatile-lru, no persistence) holds what may. See
# docs/ARCHITECTURE.md.
_REDIS = {"redis", "rediss"}
REDIS_STATE_URL = env.url("REDIS_STATE_URL", "redis://127.0.0.1:56379/0", schemes=_REDIS)
REDIS_CHANNELS_URL = env.url("REDIS_CHANNELS_URL", "redis://127.0.0.1:56379/1", schemes=_REDIS)
REDIS_CACHE_URL = env.url("REDIS_CACHE_URL", "redis://127.0.0.1:56380/0", schemes=_REDIS)
# The state Redis through Sentinel ("host:port,..."), when it runs as a primary and replicas
# that Sentinels fail over: the app asks them for the primary of REDIS_STATE_MASTER, and
# REDIS_STATE_URL and REDIS_CHANNELS_URL then give only the database, user and password.
REDIS_STATE_SENTINELS = env.host_ports("REDIS_STATE_SENTINELS")
REDIS_STATE_MASTER = env.string("REDIS_STATE_MASTER", "herd-state")


def _through_sentinel(url: str) -> tuple[str, dict]:
    """``url`` with the master's name for its host (django-redis's Sentinel URLs), and what
    channels-redis needs to find the same master."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    named = urlunsplit(parts._replace(netloc=f"{userinfo}@{REDIS_STATE_MASTER}" if userinfo else REDIS_STATE_MASTER))
    db = int(parts.path.strip("/") or 0)
    host = {"sentinels": REDIS_STATE_SENTINELS, "master_name": REDIS_STATE_MASTER, "db": db}
    if parts.password:
        host["password"] = parts.password
    return named, host


# How many replicas of the state Redis a session save waits for (WAIT) before the request
# that made it is answered; 0 without replicas. See scaling/web/sessions.py.
HERD_SESSION_REPLICAS = env.integer("HERD_SESSION_REPLICAS", 0)
HERD_SESSION_REPLICA_WAIT_MS = env.integer("HERD_SESSION_REPLICA_WAIT_MS", 500)
_REDIS_TIMEOUTS = {
    "SOCKET_CONNECT_TIMEOUT": 2,
    "SOCKET_TIMEOUT": 2,
    # A pooled connection that a Redis restart broke is retried on a new one at once,
    # so a restart costs no request an error.
    "CONNECTION_POOL_KWARGS": {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "retry_on_error": [RedisConnectionError],
    },
}

# The cache Redis: a cache that is down or hangs makes pages slower, not broken.
_CACHE_REDIS_OPTIONS = {
    **_REDIS_TIMEOUTS,
    # A loopback or in-cluster Redis accepts a connection (TLS included) in a few
    # milliseconds at most; one that has not in 0.5 s is away (its host down, or cut
    # off), and the page is better served from the database than after waiting longer.
    "SOCKET_CONNECT_TIMEOUT": 0.5,
    # A broken pooled connection is retried as above, but not a timeout (redis-py's
    # Retry retries those too unless told not to): a Redis that did not answer within
    # the socket timeout would not answer a retry either.
    "CONNECTION_POOL_KWARGS": {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [RedisConnectionError],
    },
    # A call that failed even so makes this process skip the cache Redis for
    # HERD_CACHE_BREAKER_SECONDS (scaling/cache/breaker.py), every call a miss.
    "REDIS_CLIENT_CLASS": "scaling.cache.breaker.BreakerRedis",
    "IGNORE_EXCEPTIONS": True,
}
# How long a process skips the cache Redis after a call to it failed, before it lets one
# call through to see whether it answers again.
HERD_CACHE_BREAKER_SECONDS = env.number("HERD_CACHE_BREAKER_SECONDS", 5.0)
# A call to the cache Redis slower than this counts as slow; half of the recent calls slow
# opens the breaker too. A loopback or in-cluster Redis answers in well under a millisecond;
# a cache that costs more than this per call costs more than the database read it saves.
HERD_CACHE_SLOW_CALL_SECONDS = env.number("HERD_CACHE_SLOW_CALL_SECONDS", 0.05)

# One redis.Redis per server and process, not one per request (scaling/cache/redis_clients.py).
DJANGO_REDIS_CONNECTION_FACTORY = "scaling.cache.redis_clients.SharedClientFactory"
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_CACHE_URL,
        "OPTIONS": _CACHE_REDIS_OPTIONS,
        "KEY_PREFIX": "herd",
    },
    "state": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_STATE_URL,
        "OPTIONS": dict(_REDIS_TIMEOUTS),
        "KEY_PREFIX": "herd",
        "TIMEOUT": None,
    },
}
if REDIS_STATE_SENTINELS:
    CACHES["state"] |= {
        "LOCATION": _through_sentinel(REDIS_STATE_URL)[0],
        "OPTIONS": {
            **_REDIS_TIMEOUTS,
            "CONNECTION_FACTORY": "scaling.cache.redis_clients.SharedSentinelClientFactory",
            "SENTINELS": REDIS_STATE_SENTINELS,
            "SENTINEL_KWARGS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        },
    }
# Where sessions live: "redis" (the state Redis, the herd's way) or "database" (Django's
# default: the primary, read through the router, so meant for a set-up without replicas;
# make bench measures it as the conventional single-server Django).
_SESSION_ENGINES = {
    # Django's cache backend, except that a state Redis that is down is an error (a
    # clean 503), not a logout.
    "redis": "scaling.web.sessions",
    "database": "django.contrib.sessions.backends.db",
}
HERD_SESSION_ENGINE = env.string("HERD_SESSION_ENGINE", "redis")
if HERD_SESSION_ENGINE not in _SESSION_ENGINES:
    raise env.ConfigError(f"HERD_SESSION_ENGINE={HERD_SESSION_ENGINE!r} must be redis or database")
SESSION_ENGINE = _SESSION_ENGINES[HERD_SESSION_ENGINE]
SESSION_CACHE_ALIAS = "state"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # A consumer blocks in BZPOPMIN for 5 s at a time: redis-py 8's default 5 s read
        # timeout would end it first and crash every socket quiet for 5 s.
        "CONFIG": {
            "hosts": [
                {**_through_sentinel(REDIS_CHANNELS_URL)[1], "socket_timeout": 15}
                if REDIS_STATE_SENTINELS
                else {"address": REDIS_CHANNELS_URL, "socket_timeout": 15}
            ]
        },
    }
}

# --- Dramatiq on RabbitMQ: a dead worker's unacked messages are redelivered as soon
# as its connection drops (the Redis broker waits for a heartbeat timeout).
BROKER_URL = env.url("BROKER_URL", "amqp://guest:guest@127.0.0.1:55672/%2F", schemes={"amqp", "amqps"})
# A broker that accepts a connection and never answers (a partition) must cost a request
# seconds, not pika's defaults (10 s socket, 15 s handshake, and Dramatiq tries 6 times):
# these apply unless BROKER_URL sets them.
_BROKER_TIMEOUTS = {"socket_timeout": "1", "stack_timeout": "1", "blocked_connection_timeout": "2"}
_broker = urlsplit(BROKER_URL)
BROKER_URL = urlunsplit(_broker._replace(query=urlencode({**_BROKER_TIMEOUTS, **dict(parse_qsl(_broker.query))})))
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
    # No publisher confirms: with them every send (a job's, and the page rebuilds a review
    # enqueues) waited for RabbitMQ's ack, so a broker that hangs (the broker-partition
    # drill) held every request that writes; jobs.outbox marks a job sent once its publish
    # was handed to the connection (the trade-off: docs/RELIABILITY.md, "Not covered yet").
    "OPTIONS": {"url": BROKER_URL},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "scaling.queue.ReadAtLeastEnqueuerMiddleware",
        "scaling.queue.CarryRequestIdMiddleware",
        "jobs.outbox.OutboxSweeper",
        "scaling.queue.WorkerHeartbeat",
    ],
}
# The worker's heartbeat (scaling.queue.WorkerHeartbeat), which its liveness probe reads.
HERD_WORKER_HEARTBEAT_FILE = env.string(
    "HERD_WORKER_HEARTBEAT_FILE",
    "/tmp/herd-worker.heartbeat",  # noqa: S108 - a pod's own emptyDir, its one writable path
)
HERD_WORKER_HEARTBEAT_SECONDS = env.number("HERD_WORKER_HEARTBEAT_SECONDS", 10.0)
# How often each worker sends the jobs committed without reaching the broker, and how old
# an unsent job must be to be sent by the sweep rather than by its start (jobs.outbox).
HERD_OUTBOX_SWEEP_SECONDS = env.number("HERD_OUTBOX_SWEEP_SECONDS", 5.0)
# Fault injection for tests only (jobs.tasks._hold_after_effect); ignored in production.
HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS = 0.0 if PRODUCTION else env.number("HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS", 0.0)

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files carry content hashes in their names and are served immutable.
STATIC_URL = "static/"
STATIC_ROOT = Path(env.string("DJANGO_STATIC_ROOT", str(BASE_DIR / ".herd" / "static")))
# The site's own (base.html's stylesheet); each app's live in its static/ folder.
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Uploaded files: shared storage, never a replica's disk (scaling.web.storage).
# With S3_BUCKET set, S3-compatible object storage; otherwise PostgreSQL. "default" is
# public by nature (content-addressed pictures, immutable); "private" holds one user's
# files (job inputs, exports), handed out only through owner-checked views.
S3_BUCKET = env.optional("S3_BUCKET")
if S3_BUCKET:
    _s3 = {
        "endpoint_url": env.optional("S3_ENDPOINT_URL"),
        "region_name": env.optional("S3_REGION"),
        "access_key": env.string("S3_ACCESS_KEY_ID"),
        "secret_key": env.string("S3_SECRET_ACCESS_KEY"),
    }
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": _s3
        | {
            "bucket_name": S3_BUCKET,
            "custom_domain": env.optional("S3_CUSTOM_DOMAIN"),
            "querystring_auth": False,
            "file_overwrite": True,
            "object_parameters": {"CacheControl": "public, max-age=31536000, immutable"},
        },
    }
    # A bucket of its own, so no public bucket policy or CDN reaches it; no custom domain
    # (django-storages would not sign its URLs); read only through URLs signed for minutes.
    _private_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": _s3
        | {
            "bucket_name": env.string("S3_PRIVATE_BUCKET"),
            "location": "private",
            "default_acl": "private",
            "querystring_auth": True,
            "signature_version": "s3v4",
            "querystring_expire": env.integer("S3_PRIVATE_URL_SECONDS", 300),
            "file_overwrite": True,
            "object_parameters": {"CacheControl": "private, no-store"},
        },
    }
else:
    _default_storage = {"BACKEND": "scaling.web.storage.DatabaseStorage"}
    _private_storage = {"BACKEND": "scaling.web.storage.DatabaseStorage", "OPTIONS": {"location": "private"}}
STORAGES = {
    "default": _default_storage,
    "private": _private_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Every upload stays in memory, at most this many bytes of it (scaling.web.uploads): the
# largest any form accepts (a catalog CSV); pictures have a lower limit of their own.
HERD_UPLOAD_MAX_BYTES = 10 * 1024 * 1024
FILE_UPLOAD_HANDLERS = ["scaling.web.uploads.BoundedMemoryUploadHandler"]

# --- Accounts.
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:profile"
LOGOUT_REDIRECT_URL = "catalog:index"
# robots.txt (scaling.web.views.robots_txt): the paths crawlers are asked to leave alone, and
# the pages under them they may still read: log-in and sign-up, which a shopper searches for.
# The pages behind log-in send a crawler to log-in; the admin and reset links stay out.
ROBOTS_ALLOW = ["/accounts/login/", "/accounts/signup/"]
ROBOTS_DISALLOW = ["/accounts/", "/admin/"]
# Every password log-in goes through the throttle (accounts.backends, scaling.web.throttle).
AUTHENTICATION_BACKENDS = ["accounts.backends.ThrottledModelBackend"]
# Failures allowed per (account, address) and per address before a lock; each further
# failure locks for HERD_LOGIN_LOCK_SECONDS, doubled each time, at most the maximum.
HERD_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS = env.integer("HERD_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS", 5)
HERD_LOGIN_FAILURES_PER_ADDRESS = env.integer("HERD_LOGIN_FAILURES_PER_ADDRESS", 20)
HERD_LOGIN_LOCK_SECONDS = env.number("HERD_LOGIN_LOCK_SECONDS", 60.0)
HERD_LOGIN_MAX_LOCK_SECONDS = env.number("HERD_LOGIN_MAX_LOCK_SECONDS", 3600.0)
HERD_LOGIN_FORGET_SECONDS = env.number("HERD_LOGIN_FORGET_SECONDS", 24 * 3600.0)
# Writes that cost, per hour (a 429 beyond): sign-ups and password-reset mails per
# address; job starts per user, and jobs a user may have queued or running at once.
HERD_SIGNUPS_PER_ADDRESS_PER_HOUR = env.integer("HERD_SIGNUPS_PER_ADDRESS_PER_HOUR", 10)
HERD_PASSWORD_RESETS_PER_ADDRESS_PER_HOUR = env.integer("HERD_PASSWORD_RESETS_PER_ADDRESS_PER_HOUR", 5)
HERD_JOB_STARTS_PER_USER_PER_HOUR = env.integer("HERD_JOB_STARTS_PER_USER_PER_HOUR", 30)
HERD_UNFINISHED_JOBS_PER_USER = env.integer("HERD_UNFINISHED_JOBS_PER_USER", 5)
# Messages a client may send on one notifications socket per minute; beyond, it is closed.
HERD_SOCKET_MESSAGES_PER_MINUTE = env.integer("HERD_SOCKET_MESSAGES_PER_MINUTE", 30)
# Profile pictures decoded at once per process (accounts.pictures; each at most 16 megapixels),
# and how long an upload waits for a free slot before it is refused with 503 and Retry-After.
HERD_PICTURE_DECODES = env.integer("HERD_PICTURE_DECODES", 2)
if HERD_PICTURE_DECODES < 1:
    raise env.ConfigError("HERD_PICTURE_DECODES must be at least 1")
HERD_PICTURE_DECODE_WAIT_SECONDS = env.number("HERD_PICTURE_DECODE_WAIT_SECONDS", 2.0)

# E-mail: printed to the console in development; SMTP from the environment in production.
EMAIL_BACKEND = env.string(
    "DJANGO_EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if PRODUCTION else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env.string("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = env.integer("DJANGO_EMAIL_PORT", 587)
EMAIL_HOST_USER = env.optional("DJANGO_EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env.optional("DJANGO_EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env.boolean("DJANGO_EMAIL_USE_TLS", default=True)
DEFAULT_FROM_EMAIL = env.string("DJANGO_DEFAULT_FROM_EMAIL", "Herd <no-reply@herd.invalid>")

# --- Serving and draining (the serve command, scaling.ops.health).
HERD_DRAIN_SECONDS = env.number("HERD_DRAIN_SECONDS", 5.0)
# How long /readyz waits for its checks: one that has not answered by then (a hung server)
# counts as failed. Below HAProxy's check timeout (its `inter`, 1 s) and the kubelet's (2 s).
HERD_READINESS_DEADLINE_SECONDS = env.number("HERD_READINESS_DEADLINE_SECONDS", 0.75)
# Threads that run Django's request handler in each replica process (config.asgi).
HERD_HTTP_THREADS = env.integer("HERD_HTTP_THREADS", 4)
# Addresses whose X-Forwarded-For/-Proto are believed: the load balancer's.
HERD_TRUSTED_PROXIES = env.string("HERD_TRUSTED_PROXIES", "127.0.0.1")

# --- Operations view (scaling.ops.metrics): who may read /metrics, besides staff: the
# address the connection came from, or the one a trusted proxy forwarded (uvicorn
# applies HERD_TRUSTED_PROXIES; docs/CONFIGURATION.md). Loopback and private ranges,
# where a cluster's Prometheus scrapes from.
HERD_METRICS_ALLOWED_CIDRS = env.networks(
    "HERD_METRICS_ALLOWED_CIDRS", "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
)
# How often each replica publishes its counters for the dashboard (to the state Redis).
HERD_OPS_PUBLISH_SECONDS = env.number("HERD_OPS_PUBLISH_SECONDS", 2.0)

# --- Production hardening: TLS ends at the router or load balancer in front.
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.boolean("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env.integer("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.boolean("DJANGO_SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Content-Security-Policy (django-csp): scripts, styles, frames and forms from this origin
# only. No template has an inline script, style or style="": a page cached whole for
# anonymous visitors (scaling.web.edge, HAProxy) is the same bytes under the same header. A
# staff page may use {{ request.csp_nonce }}; a page that does is never marked public.
# 'self' covers ws:/wss: to this host in CSP3 browsers (Chromium, Firefox, Safari).
_picture_origins = []
if S3_BUCKET:
    # Pictures come from the CDN in front of the bucket, or from the bucket itself.
    _s3 = _default_storage["OPTIONS"]
    if _s3["custom_domain"]:
        _picture_origins = [f"https://{_s3['custom_domain']}"]
    elif _s3["endpoint_url"]:
        _picture_origins = [_s3["endpoint_url"]]
    else:
        _regions = [f".{_s3['region_name']}"] if _s3["region_name"] else []
        _picture_origins = [f"https://{S3_BUCKET}.s3{region}.amazonaws.com" for region in ["", *_regions]]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:", *_picture_origins],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Logs: one JSON object per line (scaling.ops.logs) by default in production, where a log
# collector parses them; readable lines in development. Both carry the request id.
HERD_LOG_FORMAT = env.string("HERD_LOG_FORMAT", "json" if PRODUCTION else "text")
if HERD_LOG_FORMAT not in {"json", "text"}:
    raise env.ConfigError(f"HERD_LOG_FORMAT={HERD_LOG_FORMAT!r} must be json or text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "scaling.ops.logs.RequestIdFilter"}},
    "formatters": {
        "text": {
            "()": "scaling.ops.logs.TextFormatter",
            "format": f"%(asctime)s {HERD_REPLICA_ID} %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "scaling.ops.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": HERD_LOG_FORMAT, "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": env.string("DJANGO_LOG_LEVEL", "INFO")},
    # One line per outgoing request, or per broker connection (the queue depth of
    # scaling.ops.metrics opens one every few seconds), is noise.
    "loggers": {"httpx": {"level": "WARNING"}, "pika": {"level": "WARNING"}},
}
