"""Built-in actions: answers the assistant can compute itself, passed to the generator (or
filled into templates) as `facts`. A registry keyed by name; a pack binds an intent to one
with `action:` in intents.yml. Shared by the generator's data builder (so training sees the
facts the gateway will send) and the gateway.

- arithmetic: a whitelist evaluator over Python's `ast` (never `eval`), with bounded
  exponents and operand sizes so a request cannot make the process compute for minutes;
- unit conversion: `pint`;
- time, date and time zones: `zoneinfo` with the gazetteer's city/country zones;
- coin and dice: a caller-supplied `random.Random`, so tests and the data builder are
  deterministic.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo

from .slots import place_timezone

# user word -> (pint unit, singular, plural)
_UNITS: dict[str, tuple[str, str, str]] = {}
for _pint, _sing, _plur, _aliases in [
    ("inch", "inch", "inches", ["in", "inches"]),
    ("foot", "foot", "feet", ["ft", "feet"]),
    ("yard", "yard", "yards", ["yd", "yards"]),
    ("mile", "mile", "miles", ["mi", "miles"]),
    ("meter", "meter", "meters", ["m", "meters", "metre", "metres"]),
    ("centimeter", "centimeter", "centimeters", ["cm", "centimeters", "centimetres", "centimetre"]),
    ("millimeter", "millimeter", "millimeters", ["mm", "millimeters", "millimetres"]),
    ("kilometer", "kilometer", "kilometers", ["km", "kilometers", "kilometres", "kilometre"]),
    ("ounce", "ounce", "ounces", ["oz", "ounces"]),
    ("pound", "pound", "pounds", ["lb", "lbs", "pounds"]),
    ("gram", "gram", "grams", ["g", "grams", "gs"]),
    ("kilogram", "kilogram", "kilograms", ["kg", "kgs", "kilograms", "kilo", "kilos"]),
    ("stone", "stone", "stone", ["stones"]),
    ("cup", "cup", "cups", ["cups"]),
    ("tablespoon", "tablespoon", "tablespoons", ["tbsp", "tablespoons"]),
    ("teaspoon", "teaspoon", "teaspoons", ["tsp", "teaspoons"]),
    ("liter", "liter", "liters", ["l", "liters", "litre", "litres"]),
    ("milliliter", "milliliter", "milliliters", ["ml", "milliliters", "millilitres"]),
    ("gallon", "gallon", "gallons", ["gallons"]),
    ("quart", "quart", "quarts", ["quarts"]),
    ("pint", "pint", "pints", ["pints"]),
    ("degF", "degree Fahrenheit", "degrees Fahrenheit", ["fahrenheit", "f"]),
    ("degC", "degree Celsius", "degrees Celsius", ["celsius", "centigrade", "c"]),
]:
    for _alias in [_sing, *_aliases]:
        _UNITS[_alias.lower()] = (_pint, _sing, _plur)


def unit_name(word: str | None) -> str | None:
    """Canonical singular unit name for a user's word ("kilos" -> "kilogram"), or None."""
    if not word:
        return None
    w = word.lower().strip()
    if w in _UNITS:
        return _UNITS[w][1]
    last = w.split()[-1]
    return _UNITS[last][1] if last in _UNITS else None


def unit_quantity(n: float, unit: str) -> str:
    """ "3", "foot" -> "3 feet"."""
    _, sing, plur = _UNITS[unit.lower()]
    text = format_number(n)
    return f"{text} {sing if text == '1' else plur}"


def unit_plural(unit: str) -> str:
    return _UNITS[unit.lower()][2]


def format_number(x: float) -> str:
    """Up to 4 decimals, no trailing zeros, thousands separators ("1,234.5")."""
    if not math.isfinite(x):
        raise ArithmeticError("not a finite number")
    if abs(x - round(x)) < 1e-9:
        return f"{round(x):,}"
    return f"{x:,.4f}".rstrip("0").rstrip(".")


@cache
def _ureg():
    import pint

    return pint.UnitRegistry()


def convert(quantity: str, target_unit: str) -> str | None:
    """ "3 feet", "inches" -> "36 inches"; None when either unit is unknown or incompatible."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s+(.+?)\s*", quantity)
    src, dst = (m and unit_name(m.group(2))), unit_name(target_unit)
    if not m or not src or not dst:
        return None
    import pint

    p_src, p_dst = _UNITS[src.lower()][0], _UNITS[dst.lower()][0]
    try:
        q = _ureg().Quantity(float(m.group(1)), p_src).to(p_dst).magnitude
    except pint.errors.DimensionalityError:
        return None
    return unit_quantity(q, dst)


# ---------------------------------------------------------------- arithmetic

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_OPERAND = 1e15
_MAX_EXPONENT = 100
_MAX_EXPR_CHARS = 200


def calculate(expression: str) -> str | None:
    """Evaluate a normalised expression from the slot extractor ("50 + 756", "sqrt 16",
    "15 % of 3143", "2 ^ 10"); None when it is not a valid, bounded arithmetic expression."""
    if len(expression) > _MAX_EXPR_CHARS:
        return None
    src = (
        expression.replace("×", "*")
        .replace("÷", "/")
        .replace(",", "")
        .replace("the square root of", "sqrt")
        .replace("square root of", "sqrt")
    )
    src = re.sub(r"sqrt\s*(\d+(?:\.\d+)?|\([^()]*\))", r"sqrt(\1)", src)
    src = re.sub(r"(\d+(?:\.\d+)?)\s*%\s*of", r"(\1 / 100) *", src).replace("^", "**")
    try:
        tree = ast.parse(src, mode="eval")
        value = _eval(tree.body)
        return format_number(value)
    except (SyntaxError, ValueError, ArithmeticError, TypeError, RecursionError):
        return None


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if abs(node.value) > _MAX_OPERAND:
            raise ValueError("operand too large")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > _MAX_EXPONENT or abs(left) > 1e6):
            raise ValueError("exponent too large")
        result = _BINOPS[type(node.op)](left, right)
        if isinstance(result, complex) or abs(result) > _MAX_OPERAND**2:
            raise ValueError("result out of range")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_eval(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "sqrt"
        and len(node.args) == 1
        and not node.keywords
    ):
        return math.sqrt(_eval(node.args[0]))
    raise ValueError(f"not allowed: {type(node).__name__}")


# ---------------------------------------------------------------- time, chance, spelling


def _zone(place: str | None, default_tz: str) -> tuple[ZoneInfo, str | None]:
    tz = place_timezone(place) if place else None
    return ZoneInfo(tz or default_tz), tz


def current_time(now: datetime, place: str | None = None, default_tz: str = "UTC") -> str:
    zone, _ = _zone(place, default_tz)
    local = now.astimezone(zone)
    return f"{local:%I:%M %p}".lstrip("0")


def current_date(now: datetime, place: str | None = None, default_tz: str = "UTC") -> str:
    zone, _ = _zone(place, default_tz)
    local = now.astimezone(zone)
    return f"{local:%A}, {local:%B} {local.day}"


def timezone_of(place: str, now: datetime) -> str | None:
    """ "Eastern Standard Time (UTC-5)"-like description; None for an unknown place."""
    tz = place_timezone(place)
    if not tz:
        return None
    local = now.astimezone(ZoneInfo(tz))
    offset = local.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    return (
        f"{tz.split('/')[-1].replace('_', ' ')} time (UTC{sign}{hh}"
        + (f":{mm:02d}" if mm else "")
        + ")"
    )


def roll_dice(spec: str, rng: random.Random) -> str:
    m = re.fullmatch(r"(\d+)d(\d+)", spec or "1d6")
    count, sides = (int(m.group(1)), int(m.group(2))) if m else (1, 6)
    count, sides = max(1, min(count, 10)), max(2, min(sides, 1000))
    rolls = [rng.randint(1, sides) for _ in range(count)]
    if count == 1:
        return str(rolls[0])
    return ", ".join(map(str, rolls[:-1])) + f" and {rolls[-1]}"


def spell(word: str) -> str:
    return "-".join(word.upper())


@dataclass(frozen=True)
class ActionContext:
    """What an action may use besides the slots: the request's clock, a random source (seeded
    by the data builder and tests), and the pack's default time zone."""

    now: datetime
    rng: random.Random
    default_tz: str = "UTC"


@dataclass(frozen=True)
class Action:
    """A built-in action: the facts it can return (templates may use these names), the slot
    types it reads, those without which it returns nothing (`needs`), and the function. It
    reads slots by type, so a pack may name its slots as it likes."""

    name: str
    facts: tuple[str, ...]
    reads: tuple[str, ...]
    needs: tuple[str, ...]
    run: Callable[[dict[str, str], ActionContext], dict[str, str]]
    description: str = ""


ACTIONS: dict[str, Action] = {}


def action(
    name: str,
    facts: tuple[str, ...],
    reads: tuple[str, ...] = (),
    needs: tuple[str, ...] = (),
    description: str = "",
):
    def register(fn):
        ACTIONS[name] = Action(name, facts, reads, needs, fn, description)
        return fn

    return register


@action(
    "current_time",
    ("time",),
    ("place",),
    description="the time now, at a place or the default zone",
)
def _current_time(typed, ctx):
    return {"time": current_time(ctx.now, typed.get("place"), ctx.default_tz)}


@action(
    "current_date",
    ("date",),
    ("place",),
    description="today's date, at a place or the default zone",
)
def _current_date(typed, ctx):
    return {"date": current_date(ctx.now, typed.get("place"), ctx.default_tz)}


@action("timezone", ("timezone",), ("place",), ("place",), "the time zone of a place")
def _timezone(typed, ctx):
    tz = timezone_of(typed["place"], ctx.now) if typed.get("place") else None
    return {"timezone": tz} if tz else {}


@action(
    "calculate", ("result",), ("expression",), ("expression",), "arithmetic on an expression slot"
)
def _calculate(typed, ctx):
    result = calculate(typed["expression"]) if "expression" in typed else None
    return {"result": result} if result is not None else {}


@action(
    "convert_units",
    ("result",),
    ("quantity", "target_unit"),
    ("quantity", "target_unit"),
    "unit conversion",
)
def _convert_units(typed, ctx):
    if "quantity" not in typed or "target_unit" not in typed:
        return {}
    result = convert(typed["quantity"], typed["target_unit"])
    return {"result": result} if result is not None else {}


@action("flip_coin", ("outcome",), description="heads or tails")
def _flip_coin(typed, ctx):
    return {"outcome": ctx.rng.choice(["heads", "tails"])}


@action(
    "roll_dice",
    ("outcome",),
    ("dice",),
    description="rolls dice ('2d6'; one six-sided die by default)",
)
def _roll_dice(typed, ctx):
    return {"outcome": roll_dice(typed.get("dice", "1d6"), ctx.rng)}


@action("spell", ("spelled",), ("word",), ("word",), "spells a word letter by letter")
def _spell(typed, ctx):
    return {"spelled": spell(typed["word"])} if "word" in typed else {}


def run_action(
    name: str | None,
    slots: dict[str, str],
    slot_types: dict[str, str],
    now: datetime | None = None,
    rng: random.Random | None = None,
    default_tz: str = "UTC",
) -> dict[str, str]:
    """Facts of action `name` (None: no action, no facts) from the turn's slots, which it
    reads by type (`slot_types`: slot name -> type name)."""
    if name is None:
        return {}
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    typed: dict[str, str] = {}
    for slot, value in slots.items():
        typed.setdefault(slot_types.get(slot, slot), value)
    return ACTIONS[name].run(typed, ActionContext(now, rng or random.Random(), default_tz))
