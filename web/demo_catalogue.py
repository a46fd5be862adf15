"""What the demo's brands sell, and the order lines of its purchases (web/demo_history.py).

A few products a brand (ASCII categories, prices in grosz), so the rules have lines to
read: Hurtownia Budowlana's July campaign names FARBA-10L, KLEJ-25KG and the category
`narzedzia` (coalition/rules/demo.py), and its "Tool buyers this year" segment reads
`narzedzia` too (coalition/audience_demo.py)."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Product:
    sku: str
    category: str
    unit_price: int
    most: int = 1  # the most units of it one order takes


CATALOGUE: dict[str, tuple[Product, ...]] = {
    "hurtownia": (Product("FARBA-10L", "farby", 18_900, 4),
                  Product("KLEJ-25KG", "chemia", 4_500, 6),
                  Product("WIERTARKA-700W", "narzedzia", 34_900),
                  Product("MLOTEK-500G", "narzedzia", 5_900, 2),
                  Product("CEMENT-25KG", "materialy", 3_000, 20),
                  Product("PLYTKI-GRES-M2", "plytki", 7_900, 25),
                  Product("PANEL-DAB-M2", "podlogi", 5_400, 25)),
    "moda": (Product("SUKIENKA-LETNIA", "odziez", 18_900),
             Product("JEANSY-SLIM", "odziez", 14_000),
             Product("KURTKA-PUCHOWA", "odziez", 39_900),
             Product("T-SHIRT-BASIC", "odziez", 4_000, 3),
             Product("BUTY-SKORZANE", "obuwie", 29_900),
             Product("SZALIK-WELNA", "dodatki", 7_900, 2)),
    "akcesoria": (Product("TOREBKA-SKORA", "torebki", 24_900),
                  Product("PASEK-SKORA", "paski", 8_900, 2),
                  Product("PORTFEL-DAMSKI", "portfele", 12_900),
                  Product("KOLCZYKI-SREBRO", "bizuteria", 9_900, 2),
                  Product("OKULARY-UV400", "okulary", 15_900),
                  Product("BRELOK-SKORA", "breloki", 3_000, 3)),
    "salon": (Product("STRZYZENIE-DAMSKIE", "uslugi", 12_000),
              Product("STRZYZENIE-MESKIE", "uslugi", 4_000),
              Product("KOLORYZACJA", "uslugi", 25_000),
              Product("SZAMPON-REGEN", "kosmetyki", 5_900, 3),
              Product("MASKA-KERATYNA", "kosmetyki", 8_900, 2)),
    "b2b": (Product("MYSZ-BT", "akcesoria-komputerowe", 6_600, 5),
            Product("KABEL-HDMI-2M", "kable", 2_900, 10),
            Product("KLAWIATURA-MECH", "akcesoria-komputerowe", 29_900, 2),
            Product("SSD-1TB", "podzespoly", 32_900, 4),
            Product("MONITOR-24", "monitory", 69_900, 2),
            Product("ROUTER-WIFI6", "sieci", 39_900),
            Product("TONER-HP", "materialy-eksploatacyjne", 27_900, 5)),
}


# What one order spends at the brand, in PLN: a range to draw from (the building-supply
# wholesaler's baskets are bigger, and it earns 10 pts per full 100 PLN).
SPEND = {"hurtownia": (40, 800), "moda": (30, 400), "akcesoria": (30, 400),
         "salon": (40, 350), "b2b": (30, 450)}


def line(product: Product, quantity: int) -> dict[str, Any]:
    return {"sku": product.sku, "category": product.category, "quantity": quantity,
            "unit_price": product.unit_price, "amount": quantity * product.unit_price}


def lines_of(slug: str, *items: tuple[str, int]) -> list[dict[str, Any]]:
    """Lines for (sku, quantity) pairs of the brand's products."""
    products = {product.sku: product for product in CATALOGUE[slug]}
    return [line(products[sku], quantity) for sku, quantity in items]


def basket(rng: random.Random, slug: str, *, above: int = 0,
           featured: Collection[str] = ()) -> list[dict[str, Any]]:
    """Up to three different products worth about a spend drawn from the brand's range
    (SPEND), one whose sku or category is in `featured` first; the cheapest product
    added while the total is not above `above`."""
    products = list(CATALOGUE[slug])
    rng.shuffle(products)
    low, high = SPEND[slug]
    target = rng.randint(low, high) * 100
    chosen = {p: 1 for p in products if p.sku in featured or p.category in featured}
    chosen = dict(list(chosen.items())[:1])
    for product in products:
        left = target - _total(chosen)
        if left <= 0 or len(chosen) == 3:
            break
        if product not in chosen and product.unit_price <= left:
            chosen[product] = rng.randint(1, min(product.most, left // product.unit_price))
    cheapest = min(products, key=lambda p: p.unit_price)
    while not chosen or _total(chosen) <= above:
        chosen[cheapest] = chosen.get(cheapest, 0) + 1
    return [line(product, quantity) for product, quantity in chosen.items()]


def _total(chosen: dict[Product, int]) -> int:
    return sum(product.unit_price * quantity for product, quantity in chosen.items())
