"""The local herd: every process of Herd on one machine, on loopback, without Docker.

``python3 -m deploy.herd`` (``cli``) brings a herd up, restarts or scales its app replicas,
stops it, and runs the tests against a private one. Standard library only: it runs before
the virtualenv exists.

- ``profiles``: where each herd keeps its state and which ports it listens on;
- ``processes``: the contract of one process, and how to start, find, check and stop one;
- ``debian``: the Debian packages the herd runs, installed when root;
- ``services``: the data services (PostgreSQL primary and replica, Redis, RabbitMQ);
- ``patroni``: PostgreSQL as a Patroni cluster instead (etcd x3, two members, HAProxy), opt-in;
- ``app``: the processes running this repository's code (app replicas, the worker);
- ``haproxy``: the load balancer, its configuration and its runtime API;
- ``control``: ``Herd``, every process of one profile: up, rolling restart, scale, down.
"""
