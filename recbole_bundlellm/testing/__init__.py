"""A testing kit for plugin authors (and this project's own tests); see ``docs/plugins.md``.

- :class:`ScriptedTeacher`: an in-process teacher for an extractor's ``extract_session``;
  :class:`FakeTeacherServer`: the same script behind an OpenAI-compatible endpoint on 127.0.0.1,
  for ``distill`` (the real client, store and cache in between); :class:`Answer` for finish
  reasons, token counts and HTTP errors.
- The tiny dataset: :func:`tiny_raw_dir`, :func:`prepare_tiny_data`, :func:`tiny_sessions`.
- :func:`plugin_host`: a host of the plugins you name, with or without the built-in ones.
- :func:`bundle_struct`: what a metric receives, built by hand; :func:`as_record`: the record
  the distiller would store for an extraction (to test ``aggregate``).
- :func:`knowledge_item`, :func:`knowledge_set`, :func:`adaptation_context`: what a strategy's
  ``prepare`` gets; :func:`sampling_context`, :func:`sample`: a sampler's call, with distill's checks.
- :class:`Workspace`: all of it in one folder, with ``distill`` and ``run``.
- :class:`BundleLLMError`, :class:`PluginError`, :class:`PluginWarning`: what a test expects a
  mistake to raise (or warn).

Importing it is cheap: RecBole and torch load only when data, hosts or runs are used.
"""

from recbole_bundlellm.errors import BundleLLMError
from recbole_bundlellm.extension.host import PluginError, PluginWarning
from recbole_bundlellm.testing.builders import (
    adaptation_context,
    knowledge_item,
    knowledge_set,
    sample,
    sampling_context,
    word_measure,
)
from recbole_bundlellm.testing.data import TINY_DOMAIN, TINY_SEED, prepare_tiny_data, tiny_raw_dir, tiny_sessions
from recbole_bundlellm.testing.host import plugin_host
from recbole_bundlellm.testing.metrics import bundle_struct
from recbole_bundlellm.testing.records import as_record
from recbole_bundlellm.testing.teacher import Answer, FakeTeacherServer, ScriptedCall, ScriptedTeacher
from recbole_bundlellm.testing.workspace import Workspace

__all__ = ["TINY_DOMAIN", "TINY_SEED", "Answer", "BundleLLMError", "FakeTeacherServer", "PluginError", "PluginWarning",
           "ScriptedCall", "ScriptedTeacher", "Workspace", "adaptation_context", "as_record", "bundle_struct",
           "knowledge_item", "knowledge_set", "plugin_host", "prepare_tiny_data", "sample", "sampling_context",
           "tiny_raw_dir", "tiny_sessions", "word_measure"]
