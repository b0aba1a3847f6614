"""Every default of every stage, in one place.

Values follow GLIGEN's and ultralytics' own defaults so that a groundset run means the
same thing as the upstream tools unless a user says otherwise. CLI options and
``params.yaml`` read from here; nothing else hard-codes these numbers.
"""

# --- every command ---
PROGRESS_DELAY_S = 0.5  # a progress bar appears once its work has run this long

# --- curate (GLIGEN's dataset filters) ---
MIN_BOX_AREA = 0.01  # fraction of the image; GLIGEN drops smaller boxes
MAX_BOXES = 30  # GLIGEN keeps the 30 largest boxes per image
VAL_FRACTION = 0.05
SPLIT_SEED = 0

# --- detector (ultralytics predict defaults) ---
CONF = 0.25
IOU = 0.7
MAX_DET = 300
IMGSZ = 640
LABEL_SHARD_SIZE = 256
LABEL_BATCH = 8  # images per detector call (ultralytics splits for static-batch exports)
DEVICE = "auto"  # every command: a CUDA GPU when torch sees one, else the CPU
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS)
DETECTOR_EPOCHS = 100  # ultralytics train defaults
DETECTOR_BATCH = 16
DETECTOR_WEIGHTS = "yolov8n.yaml"  # ultralytics ships the config: trains from scratch, offline
DETECTOR_WORKERS = 0  # ultralytics dataloader processes; 0 is reproducible on a CPU
LABEL_WORKERS = 1  # 1: label in this process; N > 1: a dask LocalCluster

# --- audit ---
MIN_BOXES_FOR_EVIDENCE = 4
MAX_GRID_SHARE = 0.05  # share of grid-like images allowed above the natural reference
GRID_SCORE_THRESHOLD = 0.6  # grid_score at/above which an image counts as grid-like
AUDIT_ALPHA = 0.01  # a share excess must also be significant (one-sided binomial test)
AUDIT_WORST = 24  # worst images listed in audit.json and drawn in the report
REMEDIATIONS = ("none", "filter", "downweight", "split")
REMEDIATE = "none"

# --- trainer (GLIGEN) ---
LEARNING_RATE = 5e-5
WARMUP_STEPS = 10_000
GROUNDING_DROP = 0.1
CAPTION_DROP = 0.5
RESOLUTION = 512
BATCH_SIZE = 8
SEED = 0

# --- trainer loop and encode cache (groundset's own; GLIGEN trains 100k steps at batch 8 x 8 GPUs) ---
TRAIN_STEPS = 100_000
GRAD_ACCUM = 1
WEIGHT_DECAY = 0.0  # GLIGEN's AdamW uses none
MAX_GRAD_NORM = 1.0
CHECKPOINT_EVERY = 1_000
MONITOR_EVERY = 500  # detail monitor (one-step denoise PSNR on fixed validation latents)
MONITOR_SAMPLES = 4
MONITOR_TIMESTEPS = (100, 400, 700)
CACHE_SHARD_SIZE = 256
CACHE_CAPTIONS = 1  # captions embedded per image (0 = all); 77x768 fp16 each is ~118 KB
CACHE_DTYPES = ("float16", "float32")
CACHE_DTYPE = "float16"
ENCODE_BATCH_SIZE = 8  # images per VAE / text-encoder batch
TRAIN_MODES = ("adapters", "base")  # adapters: GLIGEN's fuser + position_net; base: whole UNet
TRAIN_MODE = "adapters"
MIXED_PRECISIONS = ("no", "fp16", "bf16")  # accelerate's choices
MIXED_PRECISION = "no"
DATA_WORKERS = 0  # data-loader worker processes
# diffusers' SDXL script's --timestep_bias_*: GLIGEN samples timesteps uniformly ("none")
TIMESTEP_BIASES = ("none", "earlier", "later")
TIMESTEP_BIAS = "none"
TIMESTEP_BIAS_MULTIPLIER = 1.0
TIMESTEP_BIAS_PORTION = 0.25
ATTN_GATE_INIT = 0.0  # alpha_attn at step 0; GLIGEN (and diffusers) start the gates closed

# --- sampling (diffusers' StableDiffusionGLIGENPipeline) ---
SCHEDULED_SAMPLING_BETA = 0.3
GUIDANCE_SCALE = 7.5
NUM_INFERENCE_STEPS = 50
SAMPLERS = ("ddim", "dpm")  # diffusers' DDIM, DPM-Solver++ multistep
SAMPLER = "ddim"
SAMPLE_DTYPES = ("float32", "float16", "bfloat16")
SAMPLE_DTYPE = "float32"
SAMPLE_BATCH_SIZE = 8
REFINER_START = 0.8  # SDXL refiner: last 20% of the schedule (diffusers' ensemble of experts)

# --- demo world (sized so the demo `dvc repro` fits 20 minutes on 2 CPU cores) ---
DEMO_N_NATURAL = 600
DEMO_N_UNLABELLED = 200
DEMO_N_GRID = 200
DEMO_N_HELDOUT = 48
DEMO_SIZE = 64  # pixels; large flat shapes learn fast at this size
DEMO_SEED = 0
PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")  # diffusers' scheduler choices
DEMO_PREDICTION_TYPE = "sample"  # x0: learns the flat demo shapes fastest
DENOISE_GAP_TIMESTEPS = (100, 300, 500, 700, 900)
DENOISE_GAP_LIMIT = 64  # held-out images measured

# --- evaluate (GLIGEN's YOLO score protocol; ultralytics `val` thresholds) ---
EVAL_BETAS = (0.0, 0.1, 0.3, 0.5, 1.0)  # scheduled-sampling betas swept
EVAL_CONF = 0.001  # `yolo val` conf: AP needs the whole precision/recall curve
EVAL_LAYOUT_CONF = 0.25  # detections counted as objects for the grid score (`predict` conf)
EVAL_SPLIT = "val"  # layouts evaluated (falls back to all records when none is "val")
EVAL_REPORT_SAMPLES = 8  # images per beta shown in report.html
EVAL_BATCH_SIZE = 8

# --- resource limits (docs/limits.md): what every stage can hold, per image; ingest
# rejects what is over them with a reason, and every dataset read refuses it in one line.
# The image-size limit is MAX_IMAGE_PIXELS above (the decoder's), declared or decoded.
MAX_BOXES_PER_IMAGE = 2_000  # the audit's pairwise statistics are O(n^2) per image
MAX_CAPTION_CHARS = 10_000  # CLIP reads 77 tokens (~300 characters); this is 30x that
