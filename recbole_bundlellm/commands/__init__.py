"""The commands: one run (:mod:`.runner`), distillation (:mod:`.distill`), comparisons with the
floors (:mod:`.compare`), grids of runs (:mod:`.benchmark`) and the ``bundlellm`` command line
(:mod:`.cli`), which only parses arguments and calls these."""
