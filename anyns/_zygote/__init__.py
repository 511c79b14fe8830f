"""Everything that runs in the zygote or in the children it clones.

* ``_server``: the zygote process: its serving loop, the plan cache, the clone;
* ``_ops``: the op table (each child operation once) and the encoder of the
  native op list;
* ``_native``: the loader of the native spawn core (``anyns/_native/spawn.c``),
  which runs the op list in the cloned child and execs.

The rule: nothing here imports from the rest of anyns but ``_sys``,
``_protocol`` and the concern modules' plain, synchronous halves that the
zygote calls (``_cgroups``, ``_init``, ``_namespaces``, ``_skeleton``); never
trio, attrs or pyroute2. The zygote is a fresh interpreter that imports only
this, so it stays small.
"""
