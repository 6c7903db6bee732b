# The runtime every RSANet recipe shares: MMAction2's default runtime plus the
# mmrsa plugin, its checks and hooks, the resumable runner and atomic
# checkpoints. A recipe inherits it through `_base_` and overrides keys.
_base_ = ['mmaction::_base_/default_runtime.py']

custom_imports = dict(imports=['mmrsa'], allow_failed_imports=False)
# checks before the first iteration: clip length and classes agree with the
# model; a loaded or resumed checkpoint fits it (mmrsa.engine.hooks)
custom_hooks = [
    dict(type='ClipCheckHook'),
    dict(type='CheckpointFitHook'),
    # a resumed run continues with the interrupted run's random state
    dict(type='RandomStateHook'),
    # distributed runs: the process group is destroyed before Python exits
    dict(type='ProcessGroupShutdownHook'),
    # a non-finite loss or gradient norm stops the run before the step
    dict(type='NonFiniteCheckHook'),
    # SIGTERM / SIGUSR1 (Slurm pre-emption): save a resumable checkpoint,
    # exit with code 75 (tools/slurm_train.sh requeues the job)
    dict(type='PreemptionHook')
]
# auto-resume (--resume) from the newest checkpoint that loads
runner_type = 'ResumableRunner'

# checkpoints written atomically; old ones removed after the new one
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3))
