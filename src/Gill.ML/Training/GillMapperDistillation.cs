using Gill.ML.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Training;

/// <summary>Options of <see cref="GillMapperDistillation"/>.</summary>
public sealed class GillMapperDistillationOptions
{
    /// <summary>Passes over the cached ([IMG] states, target) pairs (0: none).</summary>
    public int Epochs { get; set; }

    /// <summary>Pairs per optimizer step.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay to 10% of it).</summary>
    public double LearningRate { get; set; } = 3e-3;

    /// <summary>AdamW weight decay.</summary>
    public double WeightDecay { get; set; } = 0.01;

    /// <summary>Global gradient-norm clip (0: none).</summary>
    public double GradClip { get; set; } = 1.0;

    /// <summary>Generation loss (per-token L2 as the released code, or MSE).</summary>
    public GenerationLossKind Loss { get; set; } = GenerationLossKind.L2;

    /// <summary>Seed of the shuffling.</summary>
    public long Seed { get; set; }

    internal void Validate()
    {
        if (Epochs < 0) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Mapper distillation epochs must not be negative.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "Mapper distillation batch size must be positive.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Mapper distillation learning rate must be positive.");
        if (WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Weight decay must not be negative.");
        if (GradClip < 0) throw new ArgumentOutOfRangeException(nameof(GradClip), GradClip, "GradClip must not be negative.");
    }
}

/// <summary>
/// Further training of the generation mapper f_ω alone on fixed ([IMG] hidden states, target) pairs. With the LM frozen
/// and E_img fixed, the [IMG] states of a caption never change, so they are computed once and the mapper can take many
/// cheap steps without running the LM again — the generation loss l_g is the one GILL optimises, only the schedule differs
/// from joint training. Every step runs in its own dispose scope; the result is deterministic given the seed.
/// </summary>
public static class GillMapperDistillation
{
    /// <summary>The parameter-name prefix of the generation mapper inside <see cref="GillHeads"/>.</summary>
    public const string MapperPrefix = "gen_text_hidden_fcs.";

    /// <summary>
    /// Trains <paramref name="model"/>'s mapper on states [N, r, D] and targets [N, L, m] (CPU or device tensors; they are
    /// not modified). Returns the mean loss of each epoch. Progress reports use the stage name "mapper-distillation".
    /// </summary>
    public static IReadOnlyList<double> Run(GillCoreModel model, Tensor imgHiddenStates, Tensor targets, GillMapperDistillationOptions options,
        IProgress<GillTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(imgHiddenStates);
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var c = model.Config;
        if (imgHiddenStates.dim() != 3 || imgHiddenStates.shape[1] != c.NumTokens)
            throw new ArgumentException($"[IMG] hidden states must be [N, {c.NumTokens}, D], got {Serialization.SafeTensors.FormatShape(imgHiddenStates.shape)}.", nameof(imgHiddenStates));
        if (targets.dim() != 3 || targets.shape[0] != imgHiddenStates.shape[0] || targets.shape[1] != c.NumClipTokens || targets.shape[2] != c.GenEmbDim)
            throw new ArgumentException($"Targets must be [{imgHiddenStates.shape[0]}, {c.NumClipTokens}, {c.GenEmbDim}] (one per [IMG] state row), got {Serialization.SafeTensors.FormatShape(targets.shape)}.", nameof(targets));
        long n = imgHiddenStates.shape[0];
        var epochLosses = new List<double>();
        if (options.Epochs == 0 || n == 0) return epochLosses;

        var mapper = model.Heads.named_parameters().Where(p => p.name.StartsWith(MapperPrefix, StringComparison.Ordinal)).Select(p => p.parameter).ToArray();
        if (mapper.Length == 0) throw new InvalidOperationException("The model has no generation mapper parameters (gen_text_hidden_fcs).");
        var others = model.Heads.parameters().Except(mapper).Where(p => p.requires_grad).ToArray();
        foreach (var p in others) p.requires_grad_(false);
        long stepsPerEpoch = (n + options.BatchSize - 1) / options.BatchSize;
        long total = stepsPerEpoch * options.Epochs;
        long warmup = Math.Max(1, total / 20);
        var generator = new Generator(unchecked((ulong)options.Seed));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        long step = 0, examples = 0;
        try
        {
            using var optimizer = torch.optim.AdamW(mapper, options.LearningRate, 0.9, 0.95, 1e-8, options.WeightDecay);
            model.Heads.train();
            for (int epoch = 0; epoch < options.Epochs; epoch++)
            {
                double sum = 0;
                using var order = torch.randperm(n, generator: generator);
                var perm = order.data<long>().ToArray();
                for (long s = 0; s < stepsPerEpoch; s++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = torch.NewDisposeScope();
                    long from = s * options.BatchSize, count = Math.Min(options.BatchSize, n - from);
                    var index = torch.tensor(perm.AsSpan((int)from, (int)count).ToArray());
                    var h = imgHiddenStates.index_select(0, index.to(imgHiddenStates.device)).to(model.Device);
                    var y = targets.index_select(0, index.to(targets.device)).to(model.Device);
                    double lr = options.LearningRate * Math.Min(1.0, (step + 1) / (double)warmup)
                                * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * step / (double)total)));
                    foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                    optimizer.zero_grad();
                    var loss = GillLosses.Generation(model.GenerationEmbedding(h), y, options.Loss);
                    loss.backward();
                    if (options.GradClip > 0) torch.nn.utils.clip_grad_norm_(mapper, options.GradClip);
                    optimizer.step();
                    double value = loss.item<float>();
                    sum += value * count;
                    step++;
                    examples += count;
                    progress?.Report(new GillTrainingProgress("mapper-distillation", step, total, new GillLossValues(value, 0, 0, 0, 0, value), lr,
                        examples / Math.Max(watch.Elapsed.TotalSeconds, 1e-9), epoch));
                }
                epochLosses.Add(sum / n);
            }
        }
        finally
        {
            model.Heads.zero_grad();
            foreach (var p in others) p.requires_grad_(true);
        }
        return epochLosses;
    }
}
