using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Training;

/// <summary>
/// One training batch. Tensors created lazily while the trainer enumerates batches belong to that step's dispose
/// scope and are released after the step; tensors created beforehand stay owned by the caller.
/// </summary>
/// <param name="VisualFeatures">[B, Dv] visual features (CLIP pooled output), float.</param>
/// <param name="TokenIds">[B, T] int64 sequences <c>[BOS caption [IMG0..r-1] pad…]</c> (see <see cref="GillSequences.Build"/>).</param>
/// <param name="CaptionLengths">[B] int64 caption_len: the [IMG] group ends at caption_len − 1.</param>
/// <param name="GenerationTargets">[B, L, out] Stable Diffusion text embeddings; may be null when the generation loss weight is 0.</param>
public sealed record GillBatch(Tensor VisualFeatures, Tensor TokenIds, Tensor CaptionLengths, Tensor? GenerationTargets)
{
    /// <summary>B.</summary>
    public int Count => (int)TokenIds.shape[0];

    /// <summary>Builds a batch from managed arrays (one entry per example).</summary>
    /// <param name="visualFeatures">B feature vectors of length Dv.</param>
    /// <param name="tokenIds">B sequences of equal length T.</param>
    /// <param name="captionLengths">B caption lengths.</param>
    /// <param name="generationTargets">B row-major [L × out] targets, or null.</param>
    /// <param name="targetTokens">L (needed with <paramref name="generationTargets"/>).</param>
    public static GillBatch FromArrays(IReadOnlyList<float[]> visualFeatures, IReadOnlyList<long[]> tokenIds,
        IReadOnlyList<long> captionLengths, IReadOnlyList<float[]>? generationTargets = null, int targetTokens = 0)
    {
        int b = tokenIds.Count;
        if (b == 0) throw new ArgumentException("A batch needs at least one example.", nameof(tokenIds));
        if (visualFeatures.Count != b || captionLengths.Count != b || (generationTargets is not null && generationTargets.Count != b))
            throw new ArgumentException($"All columns of a batch need {b} entries.");
        int dv = visualFeatures[0].Length, t = tokenIds[0].Length;
        if (visualFeatures.Any(f => f.Length != dv)) throw new ArgumentException("Visual feature vectors differ in length.", nameof(visualFeatures));
        if (tokenIds.Any(s => s.Length != t)) throw new ArgumentException("Token sequences differ in length; pad them to one length.", nameof(tokenIds));
        var feats = torch.tensor(visualFeatures.SelectMany(f => f).ToArray(), new long[] { b, dv });
        var ids = torch.tensor(tokenIds.SelectMany(s => s).ToArray(), new long[] { b, t });
        var lens = torch.tensor(captionLengths.ToArray(), new long[] { b });
        Tensor? targets = null;
        if (generationTargets is not null)
        {
            int n = generationTargets[0].Length;
            if (targetTokens <= 0 || n % targetTokens != 0 || generationTargets.Any(g => g.Length != n))
                throw new ArgumentException($"Generation targets must all hold targetTokens × out values (targetTokens = {targetTokens}).", nameof(generationTargets));
            targets = torch.tensor(generationTargets.SelectMany(g => g).ToArray(), new long[] { b, targetTokens, n / targetTokens });
        }
        return new GillBatch(feats, ids, lens, targets);
    }

    internal void Validate(GillConfig config, bool needTargets)
    {
        long b = TokenIds.shape[0];
        if (TokenIds.dim() != 2) throw new ArgumentException($"GillBatch.TokenIds must be [B, T], got {SafeTensors.FormatShape(TokenIds.shape)}.");
        if (VisualFeatures.dim() != 2 || VisualFeatures.shape[0] != b || VisualFeatures.shape[1] != config.VisualHiddenSize)
            throw new ArgumentException($"GillBatch.VisualFeatures must be [{b}, {config.VisualHiddenSize}], got {SafeTensors.FormatShape(VisualFeatures.shape)}.");
        if (CaptionLengths.dim() != 1 || CaptionLengths.shape[0] != b)
            throw new ArgumentException($"GillBatch.CaptionLengths must be [{b}], got {SafeTensors.FormatShape(CaptionLengths.shape)}.");
        if (needTargets)
        {
            if (GenerationTargets is null)
                throw new ArgumentException("GillBatch.GenerationTargets is null but the generation loss weight is not 0.");
            if (GenerationTargets.dim() != 3 || GenerationTargets.shape[0] != b || GenerationTargets.shape[1] != config.NumClipTokens || GenerationTargets.shape[2] != config.GenEmbDim)
                throw new ArgumentException($"GillBatch.GenerationTargets must be [{b}, {config.NumClipTokens}, {config.GenEmbDim}], got {SafeTensors.FormatShape(GenerationTargets.shape)}.");
        }
    }
}

/// <summary>Scalar loss terms of one step (weighted total and each unweighted term).</summary>
public sealed record GillLossValues(double Total, double Captioning, double RetrievalText, double GenerationText, double Contrastive, double Generation);

/// <summary>Outcome of one optimizer step.</summary>
/// <param name="Step">1-based number of optimizer steps done after this one.</param>
/// <param name="Losses">Loss terms averaged over the micro-batches.</param>
/// <param name="LearningRate">Learning rate this step used.</param>
/// <param name="GradientNorm">Global gradient norm before clipping.</param>
/// <param name="Examples">Examples consumed.</param>
public sealed record GillStepResult(long Step, GillLossValues Losses, double LearningRate, double GradientNorm, int Examples);

/// <summary>Progress of a training run.</summary>
/// <param name="Stage">What is running (<c>"joint"</c> for GILL's joint step, <c>"checkpoint"</c> while saving).</param>
/// <param name="Step">Optimizer steps done.</param>
/// <param name="TotalSteps">Optimizer steps planned.</param>
/// <param name="Losses">This step's loss terms.</param>
/// <param name="LearningRate">Learning rate of this step.</param>
/// <param name="ExamplesPerSecond">Throughput of this step.</param>
/// <param name="Epoch">Pass over the batch source (0-based).</param>
public sealed record GillTrainingProgress(string Stage, long Step, long TotalSteps, GillLossValues Losses, double LearningRate, double ExamplesPerSecond, int Epoch);

/// <summary>Which passes of a step use example concatenation.</summary>
public readonly record struct GillConcatenation(bool Captioning, bool Retrieval, bool Generation)
{
    /// <summary>No concatenation (the fixture's setting).</summary>
    public static GillConcatenation None => default;
}

/// <summary>Batches for a training run: one enumeration per epoch, deterministic for resuming.</summary>
public interface IGillBatchSource
{
    /// <summary>The batches of epoch <paramref name="epoch"/> (0-based), in a fixed order for a given epoch.</summary>
    IEnumerable<GillBatch> GetBatches(int epoch);
}

/// <summary>A batch source that enumerates the same sequence every epoch.</summary>
public sealed class RepeatingBatchSource : IGillBatchSource
{
    private readonly IEnumerable<GillBatch> _batches;

    /// <summary>Wraps <paramref name="batches"/> (re-enumerated each epoch).</summary>
    public RepeatingBatchSource(IEnumerable<GillBatch> batches) => _batches = batches ?? throw new ArgumentNullException(nameof(batches));

    /// <inheritdoc />
    public IEnumerable<GillBatch> GetBatches(int epoch) => _batches;
}

/// <summary>SplitMix64: a small generator whose whole state is one number (saved in checkpoints).</summary>
internal sealed class SplitMix64
{
    public SplitMix64(ulong state) => State = state;

    public ulong State { get; set; }

    public ulong NextUInt64()
    {
        ulong z = State += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));
}
