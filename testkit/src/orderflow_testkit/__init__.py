"""Orderflow's test kit: the pytest fixtures for tests against the real RabbitMQ and
PostgreSQL (`orderflow_testkit.testing`) and servers of a test's own
(`orderflow_testkit.localservers`). For development only: no service depends on it and no
image installs it."""
