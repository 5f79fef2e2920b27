namespace Gill.ML.Evaluation;

/// <summary>
/// CLIP similarity: per pair, the cosine between the image embeddings of a generated image and its reference image;
/// <see cref="PerExampleMetrics.Value"/> is their mean (GILL's Tables 1–2 report it for projected CLIP ViT-L/14 embeddings).
/// </summary>
public sealed class ClipSimilarityMetrics : PerExampleMetrics
{
    internal ClipSimilarityMetrics(IReadOnlyList<double> scores, IReadOnlyList<string>? keys, ConfidenceInterval? interval)
        : base("ClipSimilarity", scores, keys, interval)
    {
    }
}

/// <summary>Options of the CLIP similarity evaluator.</summary>
public sealed class ClipSimilarityOptions : BootstrapOptions
{
    /// <summary>Images embedded per call of the <see cref="IImageEmbedder"/>.</summary>
    public int BatchSize { get; set; } = 32;

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
    }
}

/// <summary>Cosine similarity of paired embeddings, in float64.</summary>
internal static class ClipSimilarityEvaluator
{
    /// <summary>Floor on each vector norm, as <c>torch.nn.functional.cosine_similarity</c> uses.</summary>
    public const double Eps = 1e-8;

    public static ClipSimilarityMetrics Evaluate(IReadOnlyList<float[]> generated, IReadOnlyList<float[]> reference, IReadOnlyList<string>? keys, BootstrapOptions options)
    {
        ArgumentNullException.ThrowIfNull(generated);
        ArgumentNullException.ThrowIfNull(reference);
        options.Validate();
        if (generated.Count == 0) throw new ArgumentException("CLIP similarity needs at least one generated embedding; the generated set is empty.", nameof(generated));
        if (generated.Count != reference.Count)
            throw new ArgumentException($"CLIP similarity compares pairs: there are {generated.Count} generated embeddings but {reference.Count} reference embeddings.", nameof(reference));
        if (keys is not null && keys.Count != generated.Count)
            throw new ArgumentException($"{keys.Count} keys were given for {generated.Count} pairs.", nameof(keys));
        var scores = new double[generated.Count];
        int d = generated[0].Length;
        for (int i = 0; i < scores.Length; i++)
        {
            var a = generated[i];
            var b = reference[i];
            if (a.Length == 0) throw new ArgumentException($"Generated embedding {i} is empty.", nameof(generated));
            if (a.Length != d || b.Length != d)
                throw new ArgumentException($"Embedding sizes differ: generated[0] has {d} values, generated[{i}] has {a.Length}, reference[{i}] has {b.Length}.", nameof(reference));
            double dot = 0, na = 0, nb = 0;
            for (int j = 0; j < d; j++)
            {
                double x = a[j], y = b[j];
                if (!double.IsFinite(x)) throw new ArgumentException($"Generated embedding {i} has a non-finite value ({x}) at index {j}.", nameof(generated));
                if (!double.IsFinite(y)) throw new ArgumentException($"Reference embedding {i} has a non-finite value ({y}) at index {j}.", nameof(reference));
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            scores[i] = dot / (Math.Max(Math.Sqrt(na), Eps) * Math.Max(Math.Sqrt(nb), Eps));
        }
        return new ClipSimilarityMetrics(scores, keys, Bootstrap.MeanInterval(scores, options));
    }
}
