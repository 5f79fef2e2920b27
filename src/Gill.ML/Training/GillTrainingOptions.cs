namespace Gill.ML.Training;

/// <summary>
/// Training options of GILL's joint step and loop (names mirror the original <c>main.py</c> flags; defaults are the
/// released recipe, spec §3). Architecture lives in <see cref="GillConfig"/>.
/// </summary>
public sealed class GillTrainingOptions
{
    /// <summary>Peak learning rate (<c>--lr</c>).</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>Linear warm-up steps from 0 (<c>--lr-warmup-steps</c>); 0 disables warm-up.</summary>
    public int WarmupSteps { get; set; } = 2000;

    /// <summary>StepLR period in optimizer steps, counted after warm-up (<c>lr_schedule_step_size × steps_per_epoch</c>).</summary>
    public int LrStepSize { get; set; } = 10000;

    /// <summary>StepLR factor (<c>--lr-schedule-gamma</c>).</summary>
    public double LrGamma { get; set; } = 0.1;

    /// <summary>AdamW β1.</summary>
    public double Beta1 { get; set; } = 0.9;

    /// <summary>AdamW β2.</summary>
    public double Beta2 { get; set; } = 0.95;

    /// <summary>AdamW ε.</summary>
    public double Epsilon { get; set; } = 1e-8;

    /// <summary>AdamW decoupled weight decay, applied to the trainable tensors only (never to the frozen LM).</summary>
    public double WeightDecay { get; set; } = 0.01;

    /// <summary>Global-norm gradient clipping threshold; 0 disables clipping.</summary>
    public double GradClip { get; set; } = 1.0;

    /// <summary>Micro-batches per optimizer step (<c>--grad-accumulation-steps</c>).</summary>
    public int GradAccumulationSteps { get; set; } = 1;

    /// <summary>Probability, drawn independently per pass and step, of GILL's pairwise example concatenation (<c>--concat-captions-prob</c>).</summary>
    public double ConcatenationProbability { get; set; } = 0.5;

    /// <summary>Weight of the captioning cross-entropy (<c>cap_loss_scale</c>).</summary>
    public double CaptioningLossWeight { get; set; } = 1.0;

    /// <summary>Weight of the text-only cross-entropy of the retrieval pass (<c>ret_loss_scale · 0.5</c>).</summary>
    public double RetrievalTextLossWeight { get; set; } = 0.5;

    /// <summary>Weight of the text-only cross-entropy of the generation pass (<c>gen_loss_scale · 0.5</c>).</summary>
    public double GenerationTextLossWeight { get; set; } = 0.5;

    /// <summary>Weight of the InfoNCE retrieval loss (<c>ret_loss_scale</c>).</summary>
    public double ContrastiveLossWeight { get; set; } = 1.0;

    /// <summary>Weight of the generation distillation loss (<c>gen_loss_scale</c>).</summary>
    public double GenerationLossWeight { get; set; } = 1.0;

    /// <summary>How the two InfoNCE directions combine.</summary>
    public ContrastiveReduction ContrastiveReduction { get; set; } = ContrastiveReduction.Average;

    /// <summary>Generation loss kind (per-token L2 as the code, or MSE as the paper).</summary>
    public GenerationLossKind GenerationLoss { get; set; } = GenerationLossKind.L2;

    /// <summary>
    /// Also optimise the language model's own parameters (FROMAGe's "unfrozen LM" ablation); off by default, so the LM
    /// stays frozen as in GILL. The LM keeps its eval mode (no dropout) and gets no weight decay. Training this way
    /// changes the backbone object in place: give it a backbone copy of its own.
    /// </summary>
    public bool TrainLanguageModel { get; set; }

    /// <summary>Peak learning rate of the language model's parameters when <see cref="TrainLanguageModel"/> is set (same warm-up and StepLR schedule).</summary>
    public double LanguageModelLearningRate { get; set; } = 1e-4;

    /// <summary>Seed of the concatenation coin flips and of the torch generator (set once when training starts).</summary>
    public long Seed { get; set; } = 42;

    /// <summary>Total optimizer steps of <see cref="GillTrainer"/>.</summary>
    public int TotalSteps { get; set; } = 20000;

    /// <summary>Folder for checkpoints; null disables checkpointing and resuming.</summary>
    public string? CheckpointDirectory { get; set; }

    /// <summary>Write a checkpoint every this many optimizer steps (0: only at the end or on cancellation).</summary>
    public int CheckpointEvery { get; set; } = 2000;

    /// <summary>How many most recent checkpoints to keep.</summary>
    public int KeepCheckpoints { get; set; } = 2;

    /// <summary>Resume from the newest checkpoint in <see cref="CheckpointDirectory"/> when one exists.</summary>
    public bool Resume { get; set; } = true;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        static void Check(bool ok, string name, object value, string what)
        {
            if (!ok) throw new ArgumentOutOfRangeException(name, value, $"GillTrainingOptions.{name} {what}.");
        }
        Check(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), LearningRate, "must be positive");
        Check(LanguageModelLearningRate > 0 && double.IsFinite(LanguageModelLearningRate), nameof(LanguageModelLearningRate), LanguageModelLearningRate, "must be positive");
        Check(WarmupSteps >= 0, nameof(WarmupSteps), WarmupSteps, "must be non-negative");
        Check(LrStepSize > 0, nameof(LrStepSize), LrStepSize, "must be positive");
        Check(LrGamma > 0 && LrGamma <= 1, nameof(LrGamma), LrGamma, "must be in (0, 1]");
        Check(Beta1 >= 0 && Beta1 < 1, nameof(Beta1), Beta1, "must be in [0, 1)");
        Check(Beta2 >= 0 && Beta2 < 1, nameof(Beta2), Beta2, "must be in [0, 1)");
        Check(Epsilon > 0, nameof(Epsilon), Epsilon, "must be positive");
        Check(WeightDecay >= 0, nameof(WeightDecay), WeightDecay, "must be non-negative");
        Check(GradClip >= 0, nameof(GradClip), GradClip, "must be non-negative");
        Check(GradAccumulationSteps >= 1, nameof(GradAccumulationSteps), GradAccumulationSteps, "must be at least 1");
        Check(ConcatenationProbability >= 0 && ConcatenationProbability <= 1, nameof(ConcatenationProbability), ConcatenationProbability, "must be in [0, 1]");
        foreach (var (name, w) in new[]
                 {
                     (nameof(CaptioningLossWeight), CaptioningLossWeight), (nameof(RetrievalTextLossWeight), RetrievalTextLossWeight),
                     (nameof(GenerationTextLossWeight), GenerationTextLossWeight), (nameof(ContrastiveLossWeight), ContrastiveLossWeight),
                     (nameof(GenerationLossWeight), GenerationLossWeight),
                 })
            Check(w >= 0 && double.IsFinite(w), name, w, "must be a non-negative finite number");
        Check(TotalSteps >= 0, nameof(TotalSteps), TotalSteps, "must be non-negative");
        Check(CheckpointEvery >= 0, nameof(CheckpointEvery), CheckpointEvery, "must be non-negative");
        Check(KeepCheckpoints >= 1, nameof(KeepCheckpoints), KeepCheckpoints, "must be at least 1");
    }

    /// <summary>A copy (the step and the trainer keep their own snapshot).</summary>
    public GillTrainingOptions Clone() => (GillTrainingOptions)MemberwiseClone();

    /// <summary>
    /// The learning rate of the optimizer step with 0-based index <paramref name="step"/>: GradualWarmupScheduler
    /// (multiplier 1, from 0) followed by StepLR, as the original: base·s/W for s ≤ W, then base·γ^⌊(s−W)/S⌋.
    /// </summary>
    public double LearningRateAt(long step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step));
        if (WarmupSteps > 0 && step <= WarmupSteps) return LearningRate * step / WarmupSteps;
        long after = step - WarmupSteps;
        return LearningRate * Math.Pow(LrGamma, after / LrStepSize);
    }
}
