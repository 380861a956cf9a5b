"""Writes the small datasets the examples ship with, deterministically (numpy's seeded generator).

    python example_projects/make_data.py

The CSV files are committed; this script documents how they were made and
remakes them byte for byte.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def write(path: Path, header: list[str], rows: np.ndarray, formats: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join(fmt.format(value) for fmt, value in zip(formats, row)))
    path.write_text("\n".join(lines) + "\n")


def salary(rng: np.random.Generator) -> None:
    """A Stack Overflow salary survey style sample: years of experience -> salary."""
    years = np.round(rng.uniform(0, 20, 80), 1)
    pay = 32000 + 8700 * years + rng.normal(0, 6000, 80)
    write(HERE / "salary" / "data" / "sal_data.csv", ["YearsExperience", "Salary"], np.column_stack([years, pay]),
          ["{:.1f}", "{:.0f}"])


def wine(rng: np.random.Generator) -> None:
    """Wine-quality style: 11 physico-chemical measurements and a 3-8 quality score."""
    n = 400
    columns = {
        "fixed acidity": rng.normal(8.3, 1.7, n), "volatile acidity": rng.normal(0.53, 0.18, n),
        "citric acid": rng.uniform(0, 0.8, n), "residual sugar": rng.gamma(2.0, 1.3, n),
        "chlorides": rng.normal(0.087, 0.02, n), "free sulfur dioxide": rng.uniform(2, 60, n),
        "total sulfur dioxide": rng.uniform(10, 200, n), "density": rng.normal(0.9967, 0.0019, n),
        "pH": rng.normal(3.31, 0.15, n), "sulphates": rng.normal(0.66, 0.17, n), "alcohol": rng.normal(10.4, 1.07, n),
    }
    score = (5.6 + 0.35 * (columns["alcohol"] - 10.4) - 1.2 * (columns["volatile acidity"] - 0.53)
             + 0.8 * (columns["sulphates"] - 0.66) + rng.normal(0, 0.5, n))
    quality = np.clip(np.round(score), 3, 8)
    data = np.column_stack([*columns.values(), quality])
    write(HERE / "sklearn_elasticnet_wine" / "wine-quality.csv", [*columns, "quality"], data,
          ["{:.4f}"] * len(columns) + ["{:.0f}"])
    write(HERE / "docker" / "wine-quality.csv", [*columns, "quality"], data, ["{:.4f}"] * len(columns) + ["{:.0f}"])


def housing(rng: np.random.Generator) -> None:
    """Boston-housing style: 13 neighbourhood features and the median value (MEDV, in $1000s)."""
    n = 400
    names = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT"]
    x = np.column_stack([
        rng.gamma(0.6, 6.0, n), rng.choice([0, 12.5, 25, 80], n), rng.uniform(0.5, 27, n), rng.integers(0, 2, n),
        rng.uniform(0.38, 0.87, n), rng.normal(6.3, 0.7, n), rng.uniform(3, 100, n), rng.uniform(1.1, 12, n),
        rng.integers(1, 25, n), rng.uniform(187, 711, n), rng.uniform(12.6, 22, n), rng.uniform(0.3, 397, n),
        rng.uniform(1.7, 38, n),
    ])
    medv = np.clip(22 + 7.5 * (x[:, 5] - 6.3) - 0.55 * (x[:, 12] - 12.6) - 0.9 * (x[:, 10] - 18.5)
                   + rng.normal(0, 2.5, n), 5, 50)
    write(HERE / "boston_housing" / "housing.csv", [*names, "MEDV"], np.column_stack([x, medv]),
          ["{:.4f}"] * len(names) + ["{:.2f}"])


def airbnb(rng: np.random.Generator) -> None:
    """Listings: bedrooms, beds, bathrooms -> nightly price."""
    n = 500
    bedrooms = rng.integers(1, 6, n)
    beds = bedrooms + rng.integers(0, 3, n)
    bathrooms = np.round(np.clip(bedrooms * 0.6 + rng.normal(0, 0.4, n), 1, 4) * 2) / 2
    price = 40 + 38 * bedrooms + 9 * beds + 25 * bathrooms + rng.normal(0, 20, n)
    write(HERE / "airbnb_price" / "listings.csv", ["bedrooms", "beds", "bathrooms", "price"],
          np.column_stack([bedrooms, beds, bathrooms, price]), ["{:.0f}", "{:.0f}", "{:.1f}", "{:.2f}"])


def main() -> None:
    rng = np.random.default_rng(20261121)
    salary(rng)
    wine(rng)
    housing(rng)
    airbnb(rng)


if __name__ == "__main__":
    main()
