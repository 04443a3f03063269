"""The SHA-256 of every registered real-data file, in a module that imports nothing: the data registry
(:mod:`epi_utils.workbench.datasets`) reads them without importing the study packages (torch, scipy: ~5 s
of CPU for a runner that only checks a file), and the loaders check downloads against the same tables."""
from __future__ import annotations

#: FewAsp (Hu et al. 2021) as :func:`epi_utils.acd.data.fetch_fewasp` lays it out, relative to ``fewasp/``.
FEWASP_SHA256: dict[str, str] = {
    "FewAsp(single)/train.json": "33a550226844a5c4d6cccc446c60041595d3def487e69ce479ea5097fd6410d0",
    "FewAsp(single)/val.json": "4bbef0348b357d2b0339ea65fe70e4db43d0d85af80df58c8ac18773ce6d6e75",
    "FewAsp(single)/test.json": "547049959f074aa16936991aa59788b57022f633d2f3e7f100ec56e59e261b51",
    "FewAsp(multi)/val.json": "ccb1b0c330c13a9766079c4fed9e0f7fcb5f83b37f0e29c1fddd3f3a4097c376",
    "FewAsp(multi)/test.json": "530088cfd84b4021eb071ec57acf7e2017c95ff57d202c86d383904fd473d96e",
    "FewAsp/val.json": "281807a9468c238373d8d5b44ded6d8611a213004f895ac87fec5fd00d54ba11",
    "FewAsp/test.json": "9187328035b73365b9f1e06a685bdf61f0c2debe385fb4679ecaffdfa1335cdb",
    "separate.json": "301e6a752e7e8d662de0ddfcd3674c19a36256e59238480e1a025948acbe2bac",
}

#: The ChFinAnn subset of DocEE (:func:`epi_utils.events.fetch.fetch_chfinann_subset`), relative to
#: ``docee/chfinann/``.
CHFINANN_SUBSET_SHA256: dict[str, str] = {
    "chfinann_event_schema.derived.json": "0f9cc33a3ed66080ff5a126c621cbbc97bfd3ba190b8a80f3a19bea7a84af9ad",
    "test_split1.jsonl": "bddbe6e5e4848cac439e4f3159f66fe05c22fc96aed55314febaf263685f18b8",
    "test_split2.jsonl": "60f27b10fd25799fcb2b2d61bdd407aece8a56d14da0df55c072f50f5f713608",
    "test_split3.jsonl": "6ccfe054db0b3501f321d7dfd4e151948002a1bad2e127b7011a45ba967ad78c",
    "test_split4.jsonl": "407f5ec55a4b0e48b16589b36528c4cc57394fad9d563910a50f2c25f7441cf6",
    "test_split5.jsonl": "b6b0274be024d7adb9a6314386f4a4f3f14b1e8b5556644a40f19b1a5f41eb6a",
    "test_split6.jsonl": "064d878bd53b44b8411395c9ce32363a34953ea40fd2c4a66ffaaa2002c57759",
}
