#!/usr/bin/env bash
# Seeds for fuzz_json: dataset.json files of the kinds kdseg reads (run_fuzz.sh run).
set -eu
d=$1
mkdir -p "$d"
cat >"$d/d137.json" <<'J'
{"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
 "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
 "regions_class_order": [1, 2, 3], "numTraining": 1251, "file_ending": ".nii.gz"}
J
cat >"$d/d001.json" <<'J'
{"channel_names": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
 "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
 "numTraining": 484, "file_ending": ".nii.gz", "name": "BrainTumour \u00e9\ud83d\ude00"}
J
cat >"$d/v1.json" <<'J'
{"modality": {"0": "FLAIR"}, "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
 "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}], "x": [true, false, null, -1.5e3]}
J
cat >"$d/d23.json" <<'J'
{"channel_names": {"0": "t1n"}, "labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}}
J
