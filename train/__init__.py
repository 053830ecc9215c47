"""The train stage: distill a student from teacher records (sequence-level KD with TRL's SFTTrainer, logit KD
against an online teacher or the teacher's stored top-k logprobs), single process or under ``accelerate launch``."""
