"""Bundle generators registered as RecBole models (looked up through :mod:`recbole_bundlellm.extension.registry`)."""
