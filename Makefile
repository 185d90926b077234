# One command to set up and run the demo, one to set up and run the tests.
# Each creates .venv on first use and reinstalls when pyproject.toml or requirements.txt change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO ?= outputs/demo
SM := $(VENV)/bin/slotmatch
SHIPPED := checkpoints/models/movi-c-like-pixel
DEMO_TRAIN := data.path=$(DEMO)/data train.max_steps=40 train.val_every=20 train.checkpoint_every=20 train.num_val_videos=4 train.select_videos=4

.PHONY: demo test install clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The whole pipeline on a tiny dataset, a few minutes on 2 CPU cores: generate, look, train the teacher,
# distil the student, evaluate it beside the reference rows, segment a video file. The models read the
# shipped frozen encoders (checkpoints/encoders/, the offline stand-in for DINOv2; configs/offline-frozen.yaml). The models are far
# too briefly trained to find objects (see docs/RESULTS.md); the demo shows every step and its outputs, then
# evaluates the trained teacher shipped in checkpoints/models/ on the same videos and segments the clip with it,
# then evaluates the shipped students.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(SM) generate --preset movi-c-like --out $(DEMO)/data --num-train 16 --num-val 4 --frames 12 --size 64
	$(SM) show $(DEMO)/data --split validation --out $(DEMO)/preview.png
	$(SM) train --config movi-c-like-frozen --out $(DEMO)/teacher --quiet $(DEMO_TRAIN)
	$(SM) distill --config movi-c-like-frozen --teacher $(DEMO)/teacher/checkpoints/last.ckpt --out $(DEMO)/student --quiet $(DEMO_TRAIN)
	$(SM) evaluate --checkpoint $(DEMO)/student/checkpoints/last.ckpt --data $(DEMO)/data --out $(DEMO)/eval
	$(SM) show $(DEMO)/data --split validation --videos 1 --raw --out $(DEMO)/clip.mp4
	$(SM) segment $(DEMO)/clip.mp4 --checkpoint $(DEMO)/student/checkpoints/last.ckpt --out $(DEMO)/segmented --gif
	$(SM) plot $(DEMO)/teacher --out $(DEMO)/plots
	$(SM) evaluate --checkpoint $(SHIPPED)-teacher.safetensors --data $(DEMO)/data --out $(DEMO)/eval-shipped
	$(SM) segment $(DEMO)/clip.mp4 --checkpoint $(SHIPPED)-teacher.safetensors --out $(DEMO)/segmented-shipped --gif
	$(SM) evaluate --checkpoint $(SHIPPED)-student.safetensors --data $(DEMO)/data --out $(DEMO)/eval-shipped-student
	$(SM) evaluate --checkpoint $(SHIPPED)-student-pixeltokens.safetensors --data $(DEMO)/data --out $(DEMO)/eval-shipped-student-pixeltokens
	$(SM) evaluate --checkpoint $(SHIPPED)-student-featkd.safetensors --data $(DEMO)/data --out $(DEMO)/eval-shipped-student-featkd
	@echo "demo written to $(DEMO)/: preview.png, eval/index.html, segmented/overlay.gif, plots/;" \
	      "the shipped trained teacher: eval-shipped/index.html, segmented-shipped/overlay.gif;" \
	      "the shipped trained students: eval-shipped-student/index.html, eval-shipped-student-pixeltokens/index.html," \
	      "eval-shipped-student-featkd/index.html"

clean-demo:
	rm -rf $(DEMO)
