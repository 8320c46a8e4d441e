"""rnnexp-gradcheck: analytical gradients against central finite differences, in float64.

    rnnexp-gradcheck                                   every cell on both backends, and the reference
    rnnexp-gradcheck --backend reference --activation relu --seq-len 5 --verbose
    rnnexp-gradcheck --cell lstm --backend explicit --bidirectional --num-layers 2
    rnnexp-gradcheck --cell gru --backend native --loss mse --targets final

`--backend reference` checks the hand-written NumPy BPTT (`rnnexp.bptt.reference`, Elman cells with
each `--activation`); `native` and `explicit` check the encoder the config builds for each `--cell`
(conf/cell/<cell>.yaml) under autograd, with random weights, inputs and initial state, a linear
head and the chosen loss at every step or at the final step only.

For each parameter the table shows the largest error of one element relative to that
parameter's largest gradient, max_i |analytic_i - numeric_i| / max_i |numeric_i|: measured per
element, a gradient of 1e-7 would fail on the ~1e-11 rounding noise of the differences alone.
The command exits 1 if any parameter's error exceeds `--tolerance`. `--inject-error` adds 1% to
one analytical gradient element, to see that the check fails loudly.

ReLU is not differentiable at 0: a difference that straddles a kink measures the wrong slope. The
random problem is redrawn until every pre-activation is at least 1e-4 from 0 (a parameter step of
`--eps` moves them by far less).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnexp.bptt import reference as ref
from rnnexp.choices import CELL_NAMES

BACKENDS = ("reference", "native", "explicit")
CELLS = CELL_NAMES
KINK_MARGIN = 1e-4
MAX_REDRAWS = 50


@dataclass
class ParameterError:
    check: str
    name: str
    shape: tuple
    relative: float
    absolute: float
    elements: list = field(default_factory=list)  # (index, expected = numeric, actual = analytic)

    def passed(self, tolerance: float) -> bool:
        return self.relative <= tolerance


@dataclass
class Problem:
    """Sizes and loss of the random problem a check runs on."""

    seq_len: int = 5
    batch_size: int = 3
    input_size: int = 3
    hidden_size: int = 4
    output_size: int = 3
    num_layers: int = 1
    bidirectional: bool = False
    loss: str = "ce"        # ce | mse
    targets: str = "every"  # every | final
    seed: int = 0
    eps: float = 1e-5


def finite_differences(loss, params: dict, eps: float) -> dict[str, np.ndarray]:
    """Central differences (L(p + eps) - L(p - eps)) / 2 eps, one element at a time, in place.

    `params` values are NumPy arrays or torch tensors; `loss()` reads them as they are.
    """
    numeric = {}
    for name, p in params.items():
        flat = p.reshape(-1)  # a view for contiguous arrays and tensors
        grad = np.zeros(flat.shape[0])
        for i in range(flat.shape[0]):
            old = float(flat[i])
            flat[i] = old + eps
            plus = loss()
            flat[i] = old - eps
            minus = loss()
            flat[i] = old
            grad[i] = (plus - minus) / (2 * eps)
        numeric[name] = grad.reshape(tuple(p.shape))
    return numeric


def compare(check: str, analytic: dict, numeric: dict) -> list[ParameterError]:
    errors = []
    for name, n in numeric.items():
        a = np.asarray(analytic[name], dtype=np.float64)
        diff = np.abs(a - n)
        scale = max(float(np.abs(n).max()), float(np.abs(a).max()), 1e-300)
        elements = [(index, n[index], a[index]) for index in np.ndindex(n.shape)]
        errors.append(ParameterError(check, name, n.shape, float(diff.max()) / scale, float(diff.max()), elements))
    return errors


def _targets(rng, p: Problem):
    steps = (p.batch_size, p.seq_len) if p.targets == "every" else (p.batch_size,)
    if p.loss == "ce":
        return rng.integers(0, p.output_size, steps)
    return rng.normal(size=(*steps, p.output_size))


def _inject(analytic: dict) -> None:
    name = next(iter(analytic))
    g = analytic[name].reshape(-1)
    g[0] += 0.01 * max(float(np.abs(g).max()), 1e-6)


def _far_from_kinks(net: ref.ElmanNetwork) -> bool:
    return all(np.abs(a).min() > KINK_MARGIN for pair in net.layers for layer in pair for a in layer.pre)


# -- the NumPy reference -------------------------------------------------------------------------------
def check_reference(activation: str, problem: Problem | None = None, inject_error: bool = False):
    p = problem or Problem()
    cls = ref.BidirectionalElmanNetwork if p.bidirectional else ref.ElmanNetwork
    for attempt in range(MAX_REDRAWS):
        rng = np.random.default_rng([p.seed, attempt])
        net = cls(p.input_size, p.hidden_size, p.output_size, p.num_layers, activation, p.loss, seed=rng)
        x = rng.normal(size=(p.batch_size, p.seq_len, p.input_size))
        targets = _targets(rng, p)
        state = rng.normal(size=(p.num_layers * net.directions, p.batch_size, p.hidden_size))
        _, analytic = ref.bptt_gradients(net, x, targets, state)
        if activation != "relu" or _far_from_kinks(net):
            break

    def loss():
        return ref.bptt_gradients(net, x, targets, state)[0]

    numeric = finite_differences(loss, net.params(), p.eps)
    if inject_error:
        _inject(analytic)
    return compare(f"reference {activation}{_shape_label(p)}", analytic, numeric)


def _shape_label(p: Problem) -> str:
    return f" L{p.num_layers}{' bi' if p.bidirectional else ''} T{p.seq_len} {p.loss}/{p.targets}"


# -- an encoder as the config builds it ----------------------------------------------------------------
def cell_spec(cell: str):
    from omegaconf import OmegaConf

    from rnnexp.errors import ConfigError
    from rnnexp.nn.recurrent import cell_spec_from_config
    from rnnexp.train import CONFIG_DIR

    if cell not in CELLS:
        raise ConfigError("--cell", cell, CELLS)
    return cell_spec_from_config(OmegaConf.load(Path(CONFIG_DIR) / "cell" / f"{cell}.yaml"))


def check_encoder(cell: str, backend: str, problem: Problem | None = None, inject_error: bool = False):
    import torch
    import torch.nn.functional as F

    from rnnexp.nn.recurrent import RecurrentEncoder, readout

    p = problem or Problem()
    spec = cell_spec(cell)
    directions = 2 if p.bidirectional else 1
    for attempt in range(MAX_REDRAWS):
        torch.manual_seed(p.seed * MAX_REDRAWS + attempt)
        rng = np.random.default_rng([p.seed, attempt])
        encoder = RecurrentEncoder(spec, p.input_size, p.hidden_size, p.num_layers, p.bidirectional,
                                   backend=backend).double()
        head = torch.nn.Linear(encoder.output_size, p.output_size).double()
        with torch.no_grad():  # random weights, not the cell's init: IRNN's W = I could hide a bug
            for param in encoder.parameters():
                param.uniform_(-0.6, 0.6)
        x = torch.randn(p.batch_size, p.seq_len, p.input_size, dtype=torch.float64)
        h0 = torch.randn(p.num_layers * directions, p.batch_size, p.hidden_size, dtype=torch.float64)
        state = (h0, torch.randn_like(h0)) if spec.has_cell_state else h0
        targets = torch.as_tensor(_targets(rng, p))
        if spec.nonlinearity != "relu" or _far_from_kinks(_elman_twin(encoder, spec, p, x, h0)):
            break

    def loss():
        outputs, final = encoder(x, state)
        if p.targets == "every":
            prediction = head(outputs)
        else:
            prediction = head(readout(outputs, final, "final_state", p.num_layers, p.bidirectional))
        if p.loss == "ce":
            return F.cross_entropy(prediction.reshape(-1, p.output_size), targets.reshape(-1))
        return F.mse_loss(prediction, targets)

    from rnnexp.nn.weights import torch_layout_module

    params = dict(torch_layout_module(encoder).named_parameters())  # torch's names on both backends
    params.update({f"head.{n}": q for n, q in head.named_parameters()})
    loss().backward()
    analytic = {n: q.grad.numpy().copy() for n, q in params.items()}
    with torch.no_grad():
        numeric = finite_differences(lambda: float(loss()), {n: q.data for n, q in params.items()}, p.eps)
    if inject_error:
        _inject(analytic)
    return compare(f"{cell} {backend}{_shape_label(p)}", analytic, numeric)


def _elman_twin(encoder, spec, p: Problem, x, h0) -> ref.ElmanNetwork:
    """The reference network with the encoder's weights, run on the same input: its stored
    pre-activations are the encoder's (for spotting ReLU kinks)."""
    from rnnexp.nn.weights import torch_layout_module

    cls = ref.BidirectionalElmanNetwork if p.bidirectional else ref.ElmanNetwork
    net = cls(p.input_size, p.hidden_size, 1, p.num_layers, spec.nonlinearity, "mse")
    net.load_torch_weights(dict(torch_layout_module(encoder).named_parameters()),
                           {"weight": np.zeros((1, encoder.output_size)), "bias": np.zeros(1)})
    net.reset_state(p.batch_size, h0)
    net.forward(x.numpy())
    return net


# -- command line ------------------------------------------------------------------------------------
def _choices(allowed):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: allowed values are {', '.join(allowed)} (comma-separated)")
        return values
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rnnexp-gradcheck", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--backend", type=_choices(BACKENDS), default=list(BACKENDS),
                        help="comma list of reference, native, explicit (default: all)")
    parser.add_argument("--cell", type=_choices(CELLS), default=list(CELLS),
                        help="comma list of conf/cell names for native/explicit (default: all)")
    parser.add_argument("--activation", type=_choices(ref.ACTIVATIONS), default=list(ref.ACTIVATIONS),
                        help="comma list of Elman activations for the reference (default: all)")
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--seq-len", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=4)
    parser.add_argument("--output-size", type=int, default=3)
    parser.add_argument("--loss", choices=ref.LOSSES, default="ce")
    parser.add_argument("--targets", choices=("every", "final"), default="every",
                        help="score every step, or only the final one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps", type=float, default=1e-5, help="finite-difference step")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest relative error that passes")
    parser.add_argument("--verbose", action="store_true", help="print every element: expected - actual")
    parser.add_argument("--inject-error", action="store_true",
                        help="corrupt one analytical gradient element by 1%% (the check must then fail)")
    args = parser.parse_args(argv)
    for key in ("num_layers", "seq_len", "batch_size", "input_size", "hidden_size", "output_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    return args


def run_checks(args: argparse.Namespace) -> list[ParameterError]:
    problem = Problem(args.seq_len, args.batch_size, args.input_size, args.hidden_size, args.output_size,
                      args.num_layers, args.bidirectional, args.loss, args.targets, args.seed, args.eps)
    errors = []
    if "reference" in args.backend:
        for activation in args.activation:
            errors += check_reference(activation, problem, args.inject_error)
    for backend in (b for b in args.backend if b != "reference"):
        for cell in args.cell:
            errors += check_encoder(cell, backend, problem, args.inject_error)
    return errors


def main(argv=None) -> int:
    from rich.console import Console
    from rich.table import Table

    args = parse_args(argv)
    errors = run_checks(args)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    if args.verbose:
        for e in errors:
            console.print(f"[bold]{e.check}[/bold]  {e.name}")
            for index, expected, actual in e.elements:
                console.print(f"  {e.name.split('.')[-1]}({','.join(map(str, index))}): "
                              f"{expected:.12e} - {actual:.12e}")
    table = Table(title=f"gradient check: central differences (eps {args.eps:g}), float64")
    for column in ("check", "parameter", "shape", "max rel. error", "max abs. error", ""):
        table.add_column(column, justify="right" if "error" in column else "left")
    for i, e in enumerate(errors):
        ok = e.passed(args.tolerance)
        first_of_check = i == 0 or errors[i - 1].check != e.check
        if first_of_check and i:
            table.add_section()
        table.add_row(e.check if first_of_check else "", e.name, "x".join(map(str, e.shape)), f"{e.relative:.2e}", f"{e.absolute:.2e}",
                      "[green]ok[/green]" if ok else "[bold red]FAIL[/bold red]")
    console.print(table)
    failed = [e for e in errors if not e.passed(args.tolerance)]
    if failed:
        console.print(f"[bold red]FAILED[/bold red]: {len(failed)} of {len(errors)} parameters above tolerance "
                      f"{args.tolerance:g} ({', '.join(sorted({e.check + ' ' + e.name for e in failed}))})")
        return 1
    console.print(f"[green]passed[/green]: {len(errors)} parameters within {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
