#!/usr/bin/env python3
"""Import cycles between modules of each crate (production code only).

For every crate under the workspace (a dir with Cargo.toml and src/), maps each .rs file
to its module path, collects the paths it names (`crate::a::b`, `super::a`, `self::a`, and
`child::` for its own child modules), resolves each to the longest known module, and adds
an edge M -> T unless T is M or a descendant of M (a parent declares and re-exports its
children). Test code is left out (files named tests.rs/*_tests.rs, `#[cfg(test)] mod`
blocks). Prints every strongly connected group of more than one module.
"""
import os, re, sys

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[0] == 'bin' or rel in (['main'],):
                continue
            if rel[-1] in ('lib', 'main'):
                rel = rel[:-1]
            elif rel[-1] == 'mod':
                rel = rel[:-1]
            if rel and (rel[-1] == 'tests' or rel[-1].endswith('_tests')):
                continue
            mods[tuple(rel)] = p
    return mods

def strip_tests(s):
    s = re.sub(r'//[^\n]*', '', s)
    m = re.search(r'#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{', s)
    if m:
        # cut the block by brace matching
        i = m.end(); depth = 1
        while i < len(s) and depth:
            if s[i] == '{': depth += 1
            elif s[i] == '}': depth -= 1
            i += 1
        s = s[:m.start()] + s[i:]
    return s

def resolve(mods, parts):
    for n in range(len(parts), -1, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return None

def expand_use(s):
    """Expand `use a::{b, c::d}` groups into flat paths (one level of nesting handled recursively)."""
    out = []
    for m in re.finditer(r'\buse\s+([^;]+);', s):
        out.extend(flat(m.group(1).replace('\n', ' ')))
    return out

def flat(t):
    t = t.strip()
    i = t.find('{')
    if i < 0:
        return [t.split(' as ')[0].strip()]
    prefix = t[:i]
    body = t[i+1:t.rfind('}')]
    items, depth, cur = [], 0, ''
    for ch in body:
        if ch == ',' and depth == 0:
            items.append(cur); cur = ''
            continue
        if ch == '{': depth += 1
        if ch == '}': depth -= 1
        cur += ch
    items.append(cur)
    res = []
    for it in items:
        if it.strip():
            res.extend(flat(prefix + it.strip()))
    return res

def edges(mods):
    g = {m: set() for m in mods}
    for m, p in mods.items():
        s = strip_tests(open(p).read())
        paths = expand_use(s)
        paths += re.findall(r'\b((?:crate|super|self)(?:::\w+)+)', s)
        children = {k[-1] for k in mods if len(k) == len(m) + 1 and k[:len(m)] == m}
        paths += [c + '::' + x for c, x in re.findall(r'(?<![:\w])(\w+)::(\w+)', s) if c in children]
        for path in paths:
            parts = [x for x in path.split('::') if x]
            if not parts:
                continue
            if parts[0] == 'crate':
                parts = parts[1:]
            elif parts[0] in ('super', 'self'):
                base = list(m)
                while parts and parts[0] in ('super', 'self'):
                    if parts[0] == 'super':
                        base = base[:-1]
                    parts = parts[1:]
                parts = base + parts
            elif parts[0] in children:
                parts = list(m) + parts
            else:
                continue
            t = resolve(mods, parts)
            if t is None or t == m or t[:len(m)] == m:
                continue
            g[m].add(t)
    return g

def sccs(g):
    idx, low, on, st, out, c = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in g[v]:
            if w not in idx:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1:
                out.append(comp)
    for v in g:
        if v not in idx:
            visit(v)
    return out

root = sys.argv[1] if len(sys.argv) > 1 else '.'
bad = 0
for dirpath, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d not in ('target', '.git', 'node_modules')]
    if 'Cargo.toml' in files and os.path.isdir(os.path.join(dirpath, 'src')):
        mods = modules(os.path.join(dirpath, 'src'))
        g = edges(mods)
        for comp in sccs(g):
            bad += 1
            names = ['::'.join(x) or 'crate' for x in comp]
            print(f'{os.path.relpath(dirpath, root)}: cycle among {", ".join(sorted(names))}')
            for a in comp:
                for b in g[a]:
                    if b in comp:
                        print(f'    {"::".join(a) or "crate"} -> {"::".join(b) or "crate"}')
        print(f'{os.path.relpath(dirpath, root)}: {len(mods)} modules, {sum(len(v) for v in g.values())} edges', file=sys.stderr)
print(f'{bad} cycles')
sys.exit(1 if bad else 0)
