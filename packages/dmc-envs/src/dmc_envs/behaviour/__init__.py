"""Behaviour agents (SAC, by D4RL's recipe) and the datasets they collect.

`actor`: the agents' policy in plain torch (what every stage but the trainer reads);
`sac`: the resumable trainer (stable-baselines3); `train`: stage `train_behaviour`;
`datasets`: stage `behaviour_datasets`; `levels`: D4RL's published dataset levels.
"""
