pytest_plugins = ["orderflow_testkit.testing"]
