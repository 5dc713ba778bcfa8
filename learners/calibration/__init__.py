"""Calibration learners: UMNN/UMC monotone calibrator with SCLoss, and Platt/isotonic baselines."""
