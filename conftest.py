pytest_plugins = ["orderflow.testing"]
