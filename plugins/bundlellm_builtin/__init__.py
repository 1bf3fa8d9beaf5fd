"""The built-in plugins of recbole_bundlellm.

Each module is one plugin, exposed through the ``recbole_bundlellm`` entry-point group in the
project's ``pyproject.toml`` exactly as a third-party plugin would be: the host has no other way
to find them. Disable one by its entry-point name (``disable_plugins: [thoughts]``).
"""
