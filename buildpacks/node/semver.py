"""Picks the highest version that satisfies an npm semver range.

Usage: semver.py RANGE VERSION... ; prints the chosen version, or nothing.
Handles what package.json's engines use: exact, x-ranges (20, 20.x, *),
^ and ~, comparators (>=18 <21), hyphen ranges (18 - 20) and || unions.
"""
import re
import sys


def parse(version):
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def partial(text):
    """'20.x' -> ([20], 1): the numbers given, and how many."""
    text = text.strip().lstrip("v=")
    nums = []
    for part in text.split("."):
        if part in ("x", "X", "*", ""):
            break
        nums.append(int(part))
    return nums


def bounds_of(term):
    """One comparator or partial -> list of (op, version) constraints."""
    term = term.strip()
    m = re.match(r"^(\^|~|>=|<=|>|<|=)?\s*(.*)$", term)
    op, rest = m.group(1) or "", m.group(2)
    if rest in ("", "*", "x", "X", "latest"):
        return []
    nums = partial(rest)
    if not nums:
        return []
    low = tuple(nums + [0] * (3 - len(nums)))
    if op in (">=", ">", "<=", "<"):
        if op == ">" and len(nums) < 3:
            up = nums[:-1] + [nums[-1] + 1]
            return [(">=", tuple(up + [0] * (3 - len(up))))]
        if op == "<=" and len(nums) < 3:
            up = nums[:-1] + [nums[-1] + 1]
            return [("<", tuple(up + [0] * (3 - len(up))))]
        return [(op, low)]
    if op == "^":
        first = next((i for i, n in enumerate(nums) if n != 0), len(nums) - 1)
        up = nums[: first + 1]
        up[-1] += 1
        return [(">=", low), ("<", tuple(up + [0] * (3 - len(up))))]
    if op == "~":
        keep = nums[:2] if len(nums) >= 2 else nums[:1]
        keep[-1] += 1
        return [(">=", low), ("<", tuple(keep + [0] * (3 - len(keep))))]
    if len(nums) == 3:
        return [("=", low)]
    up = nums[:-1] + [nums[-1] + 1]
    return [(">=", low), ("<", tuple(up + [0] * (3 - len(up))))]


def satisfies(version, rng):
    v = parse(version)
    for alternative in rng.split("||"):
        alternative = alternative.strip()
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", alternative)
        if hyphen:
            terms = [">=" + hyphen.group(1), "<=" + hyphen.group(2)]
        else:
            alternative = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alternative)
            terms = alternative.split() or ["*"]
        ok = True
        for term in terms:
            for op, bound in bounds_of(term):
                if not {
                    "=": v == bound,
                    ">=": v >= bound,
                    ">": v > bound,
                    "<=": v <= bound,
                    "<": v < bound,
                }[op]:
                    ok = False
        if ok:
            return True
    return False


def main():
    rng, versions = sys.argv[1], sys.argv[2:]
    good = [v for v in versions if satisfies(v, rng)]
    if good:
        print(max(good, key=parse))


if __name__ == "__main__":
    main()
