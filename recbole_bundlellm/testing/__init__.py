"""A testing kit for plugin authors (and this project's own tests); see ``docs/plugins.md``.

- :class:`ScriptedTeacher`: an in-process teacher for an extractor's ``extract_session``;
  :class:`FakeTeacherServer`: the same script behind an OpenAI-compatible endpoint on 127.0.0.1,
  for ``distill`` (the real client, store and cache in between); :class:`Answer` for finish
  reasons, token counts and HTTP errors.
- The tiny dataset: :func:`tiny_raw_dir`, :func:`prepare_tiny_data`, :func:`tiny_sessions`.
- :func:`plugin_host`: a host of the plugins you name, with or without the built-in ones.
- :func:`bundle_struct`: what a metric receives, built by hand; :func:`as_record`: the record
  the distiller would store for an extraction (to test ``aggregate``).
- :class:`Workspace`: all of it in one folder, with ``distill`` and ``run``.

Importing it is cheap: RecBole and torch load only when data, hosts or runs are used.
"""

from recbole_bundlellm.testing.data import TINY_DOMAIN, TINY_SEED, prepare_tiny_data, tiny_raw_dir, tiny_sessions
from recbole_bundlellm.testing.host import plugin_host
from recbole_bundlellm.testing.metrics import bundle_struct
from recbole_bundlellm.testing.records import as_record
from recbole_bundlellm.testing.teacher import Answer, FakeTeacherServer, ScriptedCall, ScriptedTeacher
from recbole_bundlellm.testing.workspace import Workspace

__all__ = ["TINY_DOMAIN", "TINY_SEED", "Answer", "FakeTeacherServer", "ScriptedCall", "ScriptedTeacher", "Workspace",
           "as_record", "bundle_struct", "plugin_host", "prepare_tiny_data", "tiny_raw_dir", "tiny_sessions"]
