"""The extension mechanism: the pluggy contract (:mod:`.hookspecs`, with ``hookimpl``), the
plugin host that loads the entry points one by one (:mod:`.host`) and the model registry it owns
(:mod:`.registry`). Plugin authors import ``hookimpl`` from
``recbole_bundlellm.extension.hookspecs`` (see docs/plugins.md)."""
