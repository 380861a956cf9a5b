"""Python environments: interpreters found on the machine, python_env.yaml plans, and the uv and
virtualenv managers that build them."""
