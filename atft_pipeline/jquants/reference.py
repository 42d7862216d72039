"""J-Quants reference code tables: 33/17 sectors and market segments."""

from __future__ import annotations

# S33 code -> (Japanese name, English name, S17 code)
SECTOR33: dict[str, tuple[str, str, str]] = {
    "0050": ("水産・農林業", "Fishery, Agriculture & Forestry", "1"),
    "1050": ("鉱業", "Mining", "2"),
    "2050": ("建設業", "Construction", "3"),
    "3050": ("食料品", "Foods", "1"),
    "3100": ("繊維製品", "Textiles & Apparels", "4"),
    "3150": ("パルプ・紙", "Pulp & Paper", "4"),
    "3200": ("化学", "Chemicals", "4"),
    "3250": ("医薬品", "Pharmaceutical", "5"),
    "3300": ("石油・石炭製品", "Oil & Coal Products", "2"),
    "3350": ("ゴム製品", "Rubber Products", "6"),
    "3400": ("ガラス・土石製品", "Glass & Ceramics Products", "3"),
    "3450": ("鉄鋼", "Iron & Steel", "7"),
    "3500": ("非鉄金属", "Nonferrous Metals", "7"),
    "3550": ("金属製品", "Metal Products", "3"),
    "3600": ("機械", "Machinery", "8"),
    "3650": ("電気機器", "Electric Appliances", "9"),
    "3700": ("輸送用機器", "Transportation Equipment", "6"),
    "3750": ("精密機器", "Precision Instruments", "9"),
    "3800": ("その他製品", "Other Products", "10"),
    "4050": ("電気・ガス業", "Electric Power & Gas", "11"),
    "5050": ("陸運業", "Land Transportation", "12"),
    "5100": ("海運業", "Marine Transportation", "12"),
    "5150": ("空運業", "Air Transportation", "12"),
    "5200": ("倉庫・運輸関連業", "Warehousing & Harbor Transportation Services", "12"),
    "5250": ("情報・通信業", "Information & Communication", "10"),
    "6050": ("卸売業", "Wholesale Trade", "13"),
    "6100": ("小売業", "Retail Trade", "14"),
    "7050": ("銀行業", "Banks", "15"),
    "7100": ("証券、商品先物取引業", "Securities & Commodity Futures", "16"),
    "7150": ("保険業", "Insurance", "16"),
    "7200": ("その他金融業", "Other Financing Business", "16"),
    "8050": ("不動産業", "Real Estate", "17"),
    "9050": ("サービス業", "Services", "10"),
}
SECTOR33_OTHER = "9999"  # ETFs, REITs and other non-sector issues

SECTOR17: dict[str, str] = {
    "1": "食品",
    "2": "エネルギー資源",
    "3": "建設・資材",
    "4": "素材・化学",
    "5": "医薬品",
    "6": "自動車・輸送機",
    "7": "鉄鋼・非鉄",
    "8": "機械",
    "9": "電機・精密",
    "10": "情報通信・サービスその他",
    "11": "電力・ガス",
    "12": "運輸・物流",
    "13": "商社・卸売",
    "14": "小売",
    "15": "銀行",
    "16": "金融（除く銀行）",
    "17": "不動産",
    "99": "その他",
}

# Market code -> (Japanese name, English name)
MARKET_SEGMENTS: dict[str, tuple[str, str]] = {
    "0101": ("東証一部", "1st Section"),
    "0102": ("東証二部", "2nd Section"),
    "0104": ("マザーズ", "Mothers"),
    "0105": ("TOKYO PRO MARKET", "TOKYO PRO MARKET"),
    "0106": ("JASDAQ スタンダード", "JASDAQ Standard"),
    "0107": ("JASDAQ グロース", "JASDAQ Growth"),
    "0109": ("その他", "Others"),
    "0111": ("プライム", "Prime"),
    "0112": ("スタンダード", "Standard"),
    "0113": ("グロース", "Growth"),
}

INVESTOR_SECTIONS = (
    "TSE1st", "TSE2nd", "TSEMothers", "TSEJASDAQ", "TSEPrime", "TSEStandard", "TSEGrowth",
    "TokyoNagoya",
)
