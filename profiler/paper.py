"""The published results of the paper (Valdez-Rodriguez et al., MEX-A3T 2019), quoted.

Tables 1, 2 and 4 (F, Acc, P, R per trait) and Tables 3 and 5 (per-class accuracy for
location and occupation), row for row as printed, for showing beside our own results.
"""
from __future__ import annotations

SOURCE = "quoted from the paper (MEX-A3T 2019)"

#: (trait, system) -> (F, Acc, P, R), in the paper's row order
SUMMARY: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {
    "gender": [
        ("CerpamidTeam 1 (text)", (0.8366, 0.8347, 0.8412, 0.8347)),
        ("CerpamidTeam 2 (text)", (0.8331, 0.8313, 0.8392, 0.8313)),
        ("3D CNN Model 2", (0.5227, 0.5227, 0.5230, 0.5227)),
        ("3D CNN Model 1", (0.4711, 0.4840, 0.4823, 0.4840)),
    ],
    "location": [
        ("CerpamidTeam 1 (text)", (0.5020, 0.6307, 0.5214, 0.4934)),
        ("CerpamidTeam 2 (text)", (0.4844, 0.6153, 0.4988, 0.4766)),
        ("3D CNN Model 1", (0.1482, 0.2393, 0.1645, 0.1573)),
        ("3D CNN Model 2", (0.1098, 0.1687, 0.1674, 0.1846)),
    ],
    "occupation": [
        ("CerpamidTeam 1 (text)", (0.3957, 0.6587, 0.4331, 0.3744)),
        ("CerpamidTeam 2 (text)", (0.3824, 0.6613, 0.4201, 0.3619)),
        ("3D CNN Model 1", (0.1196, 0.2693, 0.1235, 0.1284)),
        ("3D CNN Model 2", (0.0951, 0.2300, 0.1402, 0.1260)),
    ],
}

#: trait -> [(system, {class: accuracy})] for the paper's Tables 3 (location) and 5 (occupation)
PER_CLASS: dict[str, list[tuple[str, dict[str, float]]]] = {
    "location": [
        ("CerpamidTeam 1 (text)", dict(center=0.6889, southeast=0.3864, northwest=0.6667,
                                       north=0.1667, northeast=0.7091, west=0.2890)),
        ("CerpamidTeam 2 (text)", dict(center=0.7021, southeast=0.3984, northwest=0.6651,
                                       north=0.2535, northeast=0.7297, west=0.2634)),
        ("3D CNN Model 1", dict(center=0.4177, southeast=0.0430, northwest=0.0952,
                                north=0.0260, northeast=0.2066, west=0.1008)),
        ("3D CNN Model 2", dict(center=0.3606, southeast=0.0000, northwest=0.0867,
                                north=0.0491, northeast=0.1377, west=0.0250)),
    ],
    "occupation": [
        ("CerpamidTeam 1 (text)", dict(others=0.1026, arts=0.2514, student=0.8597, social=0.5695,
                                       sciences=0.1982, sports=0.3077, administrative=0.5134,
                                       health=0.2564)),
        ("CerpamidTeam 2 (text)", dict(others=0.1333, arts=0.3333, student=0.8648, social=0.5508,
                                       sciences=0.2075, sports=0.3500, administrative=0.4785,
                                       health=0.2469)),
        ("3D CNN Model 1", dict(others=0.0000, arts=0.0902, student=0.4495, social=0.1390,
                                sciences=0.0654, sports=0.0000, administrative=0.2131,
                                health=0.0000)),
        ("3D CNN Model 2", dict(others=0.0000, arts=0.1181, student=0.4394, social=0.0701,
                                sciences=0.0408, sports=0.0000, administrative=0.0926,
                                health=0.0000)),
    ],
}
