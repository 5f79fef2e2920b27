using Microsoft.Data.Analysis;

namespace Gill.ML.Evaluation;

/// <summary>Which side of a paired text/image set is the query.</summary>
public enum RetrievalDirection
{
    /// <summary>Queries are texts (e.g. the [IMG0] retrieval embedding of a story), the gallery holds images.</summary>
    TextToImage,
    /// <summary>Queries are images, the gallery holds texts.</summary>
    ImageToText,
}

/// <summary>How query and gallery vectors are compared.</summary>
public enum RetrievalSimilarity
{
    /// <summary>Dot product (GILL/FROMAGe: both sides already L2-normalised).</summary>
    Dot,
    /// <summary>Cosine similarity (vectors normalised here).</summary>
    Cosine,
}

/// <summary>Options of the Recall@k evaluator.</summary>
public sealed class RecallAtKOptions : BootstrapOptions
{
    /// <summary>The k values (1, 5, 10 by default).</summary>
    public int[] Ks { get; set; } = { 1, 5, 10 };

    /// <summary>Similarity between queries and gallery items.</summary>
    public RetrievalSimilarity Similarity { get; set; } = RetrievalSimilarity.Dot;

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (Ks is null || Ks.Length == 0) throw new ArgumentException("Ks must list at least one k.", nameof(Ks));
        foreach (var k in Ks)
            if (k < 1) throw new ArgumentOutOfRangeException(nameof(Ks), k, "Every k must be at least 1.");
    }
}

/// <summary>
/// Recall@k: the share of queries with at least one positive among the k most similar non-excluded gallery items.
/// <see cref="Ranks"/> holds, per query, the 1-based rank of its best-ranked positive.
/// </summary>
public sealed class RecallAtKMetrics
{
    internal RecallAtKMetrics(RetrievalDirection direction, int[] ks, int[] ranks, int[] queryIndices, int galleryCount, IReadOnlyDictionary<int, ConfidenceInterval?> intervals)
    {
        Direction = direction;
        QueryIndices = queryIndices.ToArray();
        Ks = ks.ToArray();
        Ranks = ranks.ToArray();
        N = ranks.Length;
        GallerySize = galleryCount;
        Recall = ks.Distinct().ToDictionary(k => k, k => ranks.Count(r => r <= k) / (double)ranks.Length);
        ConfidenceIntervals = new Dictionary<int, ConfidenceInterval?>(intervals);
        MeanRank = ranks.Average();
    }

    /// <summary>Query direction.</summary>
    public RetrievalDirection Direction { get; }

    /// <summary>The requested k values.</summary>
    public IReadOnlyList<int> Ks { get; }

    /// <summary>Recall@k by k, in [0, 1].</summary>
    public IReadOnlyDictionary<int, double> Recall { get; }

    /// <summary>Bootstrap interval of each Recall@k (null when off).</summary>
    public IReadOnlyDictionary<int, ConfidenceInterval?> ConfidenceIntervals { get; }

    /// <summary>Recall at the first requested k (the headline value).</summary>
    public double Value => Recall[Ks[0]];

    /// <summary>Number of queries.</summary>
    public int N { get; }

    /// <summary>Gallery size.</summary>
    public int GallerySize { get; }

    /// <summary>Per query, the 1-based rank of its best positive among the non-excluded gallery items.</summary>
    public IReadOnlyList<int> Ranks { get; }

    /// <summary>
    /// Index of each evaluated query in its input list. In <see cref="RetrievalDirection.ImageToText"/>, images that are
    /// no text's positive have nothing to retrieve and are skipped.
    /// </summary>
    public IReadOnlyList<int> QueryIndices { get; }

    /// <summary>Mean of <see cref="Ranks"/>.</summary>
    public double MeanRank { get; }

    /// <summary>Per-query results: index, rank, and a hit column per k.</summary>
    public DataFrame ToDataFrame()
    {
        var cols = new List<DataFrameColumn>
        {
            new Int32DataFrameColumn("Query", QueryIndices),
            new Int32DataFrameColumn("Rank", Ranks),
        };
        foreach (var k in Ks.Distinct()) cols.Add(new BooleanDataFrameColumn($"HitAt{k}", Ranks.Select(r => r <= k)));
        return new DataFrame(cols);
    }

    /// <summary>One row per k.</summary>
    public DataFrame ToSummaryDataFrame() =>
        MetricFrames.Summary(Ks.Distinct().Select(k => ($"Recall@{k}", Recall[k], N, (double?)null, ConfidenceIntervals[k])));

    /// <inheritdoc />
    public override string ToString() => string.Join(", ", Ks.Distinct().Select(k => $"R@{k} = {Recall[k]:P2}")) + $" ({Direction}, N = {N}, gallery {GallerySize})";
}

internal static class RecallAtKEvaluator
{
    /// <summary>
    /// Recall@k. In <see cref="RetrievalDirection.TextToImage"/> the texts are the queries and <paramref name="positives"/>[q]
    /// lists the image indices that count for text q; in <see cref="RetrievalDirection.ImageToText"/> the roles swap and the
    /// positives of image j are the texts whose positives contain j (exclusions are inverted the same way).
    /// </summary>
    public static RecallAtKMetrics Evaluate(IReadOnlyList<float[]> texts, IReadOnlyList<float[]> images, IReadOnlyList<int[]> positives,
        IReadOnlyList<int[]>? excluded, RetrievalDirection direction, RecallAtKOptions options)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(positives);
        options.Validate();
        if (texts.Count == 0) throw new ArgumentException("Recall@k needs at least one text embedding; the set is empty.", nameof(texts));
        if (images.Count == 0) throw new ArgumentException("Recall@k needs at least one image embedding; the set is empty.", nameof(images));
        if (positives.Count != texts.Count)
            throw new ArgumentException($"There are {texts.Count} text embeddings but ground truth for {positives.Count}; give one positive list per text.", nameof(positives));
        if (excluded is not null && excluded.Count != texts.Count)
            throw new ArgumentException($"There are {texts.Count} text embeddings but exclusion lists for {excluded.Count}.", nameof(excluded));
        for (int q = 0; q < positives.Count; q++)
            foreach (var p in positives[q])
                if (p < 0 || p >= images.Count) throw new ArgumentOutOfRangeException(nameof(positives), p, $"Positive {p} of text {q} is outside the {images.Count} images.");
        if (excluded is not null)
            for (int q = 0; q < excluded.Count; q++)
                foreach (var p in excluded[q])
                    if (p < 0 || p >= images.Count) throw new ArgumentOutOfRangeException(nameof(excluded), p, $"Excluded item {p} of text {q} is outside the {images.Count} images.");

        IReadOnlyList<float[]> queries = texts, gallery = images;
        IReadOnlyList<int[]> pos = positives;
        IReadOnlyList<int[]>? exc = excluded;
        if (direction == RetrievalDirection.ImageToText)
        {
            queries = images;
            gallery = texts;
            pos = Invert(positives, images.Count);
            exc = excluded is null ? null : Invert(excluded, images.Count);
        }
        var q2 = Normalise(queries, "query", options.Similarity);
        var g2 = Normalise(gallery, "gallery", options.Similarity);
        if (q2[0].Length != g2[0].Length)
            throw new ArgumentException($"Query embeddings have {q2[0].Length} values but gallery embeddings have {g2[0].Length}.");
        var ranks = new List<int>();
        var queryIndices = new List<int>();
        var scores = new double[g2.Length];
        for (int q = 0; q < q2.Length; q++)
        {
            if (pos[q].Length == 0)
            {
                if (direction == RetrievalDirection.ImageToText) continue;
                throw new ArgumentException($"Text query {q} has no positive image; every text needs at least one.", nameof(positives));
            }
            for (int g = 0; g < g2.Length; g++) scores[g] = Dot(q2[q], g2[g]);
            var ex = exc is null ? null : new HashSet<int>(exc[q]);
            double best = double.NegativeInfinity;
            foreach (var p in pos[q])
                if (ex is null || !ex.Contains(p)) best = Math.Max(best, scores[p]);
            if (double.IsNegativeInfinity(best))
                throw new ArgumentException($"Every positive of query {q} is also excluded.", nameof(excluded));
            int rank = 1;
            for (int g = 0; g < g2.Length; g++)
                if (scores[g] > best && (ex is null || !ex.Contains(g))) rank++;
            ranks.Add(rank);
            queryIndices.Add(q);
        }
        if (ranks.Count == 0) throw new ArgumentException("No image is the positive of any text: there is nothing to retrieve.", nameof(positives));
        var intervals = new Dictionary<int, ConfidenceInterval?>();
        foreach (var k in options.Ks.Distinct())
            intervals[k] = Bootstrap.MeanInterval(ranks.Select(r => r <= k ? 1.0 : 0.0).ToArray(), options);
        return new RecallAtKMetrics(direction, options.Ks, ranks.ToArray(), queryIndices.ToArray(), g2.Length, intervals);
    }

    private static int[][] Invert(IReadOnlyList<int[]> lists, int targetCount)
    {
        var inv = Enumerable.Range(0, targetCount).Select(_ => new List<int>()).ToArray();
        for (int i = 0; i < lists.Count; i++)
            foreach (var j in lists[i]) inv[j].Add(i);
        return inv.Select(l => l.ToArray()).ToArray();
    }

    private static double[][] Normalise(IReadOnlyList<float[]> rows, string role, RetrievalSimilarity similarity)
    {
        int d = rows[0].Length;
        if (d == 0) throw new ArgumentException($"The {role} embeddings are empty vectors.");
        var result = new double[rows.Count][];
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Length != d) throw new ArgumentException($"The {role} embeddings have {d} values in row 0 but {rows[i].Length} in row {i}.");
            var r = new double[d];
            double n = 0;
            for (int j = 0; j < d; j++)
            {
                r[j] = rows[i][j];
                if (!double.IsFinite(r[j])) throw new ArgumentException($"The {role} embedding {i} has a non-finite value ({r[j]}) at index {j}.");
                n += r[j] * r[j];
            }
            if (similarity == RetrievalSimilarity.Cosine)
            {
                n = Math.Max(Math.Sqrt(n), 1e-12);
                for (int j = 0; j < d; j++) r[j] /= n;
            }
            result[i] = r;
        }
        return result;
    }

    private static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
