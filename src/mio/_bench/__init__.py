"""The end-to-end loopback benchmark behind ``mio bench`` and ``benchmarks/e2e/run.py``.

Private: the layout may change between releases. Modules:

* :mod:`.common`: sizes (:class:`~.common.Totals` and its presets), payloads, CPU meter,
  event-loop selection.
* :mod:`.workloads`: W1 bulk, W2 rpc, W3 many streams, W4 fairness, written once against
  a small client interface that every system implements.
* :mod:`.systems`: the systems compared (mio, mio-pure, raw TCP (a) and (b), h2, aioquic)
  and their optional dependencies.
* :mod:`.worker`: the child processes (one server and one client per system and loop).
* :mod:`.runner`: plans the rounds, drives the workers, writes JSON lines.
* :mod:`.summary` and :mod:`.plot`: the Markdown table with the target ratios, the PNG.
"""
