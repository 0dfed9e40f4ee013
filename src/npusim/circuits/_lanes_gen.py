"""Writes :mod:`npusim.circuits._lanes` (``python -m npusim.circuits._lanes_gen``, then
``ruff format``): 16-lane straight-line numba code, one scalar per lane, which LLVM's SLP
vectoriser packs into one register."""

L = 16  # lanes: one AVX-512 register of float32


def acc(U):
    args = ", ".join(f"w{u}" for u in range(U))
    o = [
        "@njit(cache=True)",
        f"def _acc{U}(t, {args}, rows, off, n):  # pragma: no cover - compiled",
        f'    """``t[u, l] += w_u[i]·rows[off + i, l]``, i = 0 .. n−1 in order; {U} unit(s)."""',
    ]
    for u in range(U):
        o.append(f"    t{u} = t[{u}]")
        o += [f"    a{u}_{l} = t{u}[{l}]" for l in range(L)]
    o.append("    for i in range(n):")
    o.append("        s = rows[off + i]")
    o += [f"        s{l} = s[{l}]" for l in range(L)]
    for u in range(U):
        o.append(f"        v = w{u}[i]")
        o += [f"        a{u}_{l} += v * s{l}" for l in range(L)]
    for u in range(U):
        o += [f"    t{u}[{l}] = a{u}_{l}" for l in range(L)]
    return "\n".join(o)


def fin(kind):
    if kind == "hidden":
        head = [
            "@njit(cache=True)",
            "def _finish_hidden(t, row, den, lo, hi, divide, mask, res):  # pragma: no cover",
            '    """Hidden unit, 16 lanes: ``clamp(t / den, lo, hi)`` (divided if ``divide``)."""',
        ]
        body = []
        for l in range(L):
            body += [f"    v = t[{l}] / den if divide else t[{l}]"]
            body += ["    v = lo if v < lo else v", "    v = hi if v > hi else v"]
            body += _tail(l)
    else:
        head = [
            "@njit(cache=True)",
            "def _finish_output(t, row, sc, of, lo, hi, mask, res):  # pragma: no cover",
            '    """Output unit, 16 lanes: ``clamp(t·sc + of, lo, hi)`` (per-lane nudging)."""',
        ]
        body = []
        for l in range(L):
            body += [f"    v = t[{l}] * sc[{l}] + of[{l}]"]
            body += ["    v = lo if v < lo else v", "    v = hi if v > hi else v"]
            body += _tail(l)
    return "\n".join(head + body)


def _tail(l):
    return [
        f"    v = v if mask[{l}] != 0.0 else 0.0",
        f"    d = abs(v - row[{l}])",
        f"    r = res[{l}]",
        f"    res[{l}] = r if (r >= d or r != r) else d",
        f"    row[{l}] = v",
    ]


def wide(U=1):
    per = f"{U} units at a time." if U > 1 else "unit by unit."
    per += '"""'
    o = [
        "@njit(cache=True)",
        "def _wide_hidden(  # pragma: no cover - compiled",
        "    rows, off, n, base, wd, offd, nd, wu, offu, nu, den, lo, hi, divide, mask, res, track",
        "):  # fmt: skip",
        '    """Hidden layer at ``rows[off : off + n]`` of one chunk, in registers: unit j gets',
        "    ``base[j]`` plus ``nd`` terms ``wd[j, i]·rows[offd + i]`` and ``nu`` terms",
        "    ``wu[j, i]·rows[offu + i]`` in order, then :func:`_finish_hidden`'s update; for",
        "    layers whose units have few neighbours (a wide layer under a narrow one). ``track``:",
        "    the residual into ``res`` (else left alone: a sweep nobody checks); " + per,
    ]
    o += [f"    m{l} = mask[{l}]" for l in range(L)]
    o += [f"    r{l} = res[{l}]" for l in range(L)]
    o.append("    zero = m0 - m0  # in the states' type: the residual in it too")
    for track in (True, False):
        o.append("    if track:" if track else "    else:")
        for div in (True, False):
            o.append("        if divide:" if div else "        else:")
            o.append("            j = 0")
            for block in (U, 1) if U > 1 else (1,):
                o.append(f"            while j + {block} <= n:")
                o += _wide_block(block, div, "                ", track)
                o.append(f"                j += {block}")
    o += [f"    res[{l}] = r{l}" for l in range(L)]
    return "\n".join(o)


def _wide_block(U, div, I, track):
    """Units j .. j+U−1: sums a{u}_{l}, each in the one-unit order."""
    o = []
    for u in range(U):
        o.append(I + f"b = base[j + {u}]")
        o += [I + f"a{u}_{l} = b[{l}]" for l in range(L)]
    for wn, offn, nn in (("wd", "offd", "nd"), ("wu", "offu", "nu")):
        o += [I + f"wr{u} = {wn}[j + {u}]" for u in range(U)]
        o.append(I + f"for i in range({nn}):")
        o.append(I + f"    s = rows[{offn} + i]")
        o += [I + f"    s{l} = s[{l}]" for l in range(L)]
        for u in range(U):
            o.append(I + f"    v = wr{u}[i]")
            o += [I + f"    a{u}_{l} += v * s{l}" for l in range(L)]
    for u in range(U):
        o.append(I + f"lj = lo[j + {u}]")
        o.append(I + f"hj = hi[j + {u}]")
        if div:
            o.append(I + f"dj = den[j + {u}]")
            o += [I + f"a{u}_{l} = a{u}_{l} / dj" for l in range(L)]
        o.append(I + f"row = rows[off + j + {u}]")
        for l in range(L):
            o += [
                I + f"v = lj if a{u}_{l} < lj else a{u}_{l}",
                I + "v = hj if v > hj else v",
                I + f"v = v if m{l} != 0.0 else zero",
            ]
            if track:
                o += [
                    I + f"d = abs(v - row[{l}])",
                    I + f"r{l} = r{l} if (r{l} >= d or r{l} != r{l}) else d",
                ]
            o.append(I + f"row[{l}] = v")
    return o


HEADER = (
    '"""Sixteen-lane building blocks of :mod:`npusim.circuits.fused`, generated by\n'
    "``python -m npusim.circuits._lanes_gen`` (straight-line code that LLVM's SLP vectoriser\n"
    "turns into one 16-wide register per unit: numba cannot express vector registers otherwise).\n"
    'Edit the generator, not this file."""\n\nfrom numba import njit\n'
)


def main() -> None:
    blocks = [acc(4), acc(1), fin("hidden"), fin("output"), wide()]
    print(HEADER + "".join("\n\n" + b + "\n" for b in blocks))


if __name__ == "__main__":
    main()
