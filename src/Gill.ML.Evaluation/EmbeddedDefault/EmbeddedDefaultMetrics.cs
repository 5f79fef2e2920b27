using Microsoft.Data.Analysis;

namespace Gill.ML.Evaluation;

/// <summary>
/// "FD-ResNet18": the Fréchet distance between Gaussians fitted (float64, N − 1) to the ResNet-18 ImageNet pooled
/// features of the generated and the reference set — the FID formula on the embedded default backbone. Its scale is
/// not that of FID (different network, 512-d features): <see cref="Backbone"/> says so in every report.
/// </summary>
public sealed class FrechetResNet18Metrics
{
    /// <summary>The metric's name in frames and reports.</summary>
    public const string MetricName = "FD-ResNet18";

    internal FrechetResNet18Metrics(FidMetrics distance) => Distance = distance;

    /// <summary>The underlying Fréchet distance (value, terms, counts, interval).</summary>
    public FidMetrics Distance { get; }

    /// <summary>The Fréchet distance.</summary>
    public double Value => Distance.Value;

    /// <summary>Number of generated images.</summary>
    public long N => Distance.N;

    /// <summary>Number of reference images.</summary>
    public long ReferenceCount => Distance.ReferenceCount;

    /// <summary>Bootstrap interval, or null when off.</summary>
    public ConfidenceInterval? ConfidenceInterval => Distance.ConfidenceInterval;

    /// <summary>What the features are, and that the value is not comparable to published FID.</summary>
    public string Backbone => ResNet18Features.Backbone;

    /// <summary>Rows FD-ResNet18, MeanTerm, TraceTerm with counts, interval and the <c>Backbone</c> label.</summary>
    public DataFrame ToDataFrame()
    {
        var df = Distance.ToDataFrame();
        df["Metric"][0] = MetricName;
        df.Columns.Add(new StringDataFrameColumn("Backbone", Enumerable.Repeat(Backbone, (int)df.Rows.Count)));
        return df;
    }

    /// <summary>One-row summary (the shared shape) plus the <c>Backbone</c> label.</summary>
    public DataFrame ToSummaryDataFrame()
    {
        var df = MetricFrames.Summary(MetricName, Value, (int)Math.Min(int.MaxValue, N), null, ConfidenceInterval);
        df.Columns.Add(new StringDataFrameColumn("Backbone", new[] { Backbone }));
        return df;
    }

    /// <inheritdoc />
    public override string ToString() => $"{MetricName} = {Value:G6} (N = {N}, reference {ReferenceCount}; {Backbone})";
}

/// <summary>
/// An LPIPS-style perceptual distance on the embedded default backbone: per pair, the cosine distance
/// 1 − cos(f(a), f(b)) of the ResNet-18 ImageNet 512-d pooled features (0 for identical images, at most 2). It is not
/// LPIPS (no spatial taps, no learned linear heads) and not comparable to published LPIPS values.
/// </summary>
public sealed class ResNet18PerceptualMetrics : PerExampleMetrics
{
    /// <summary>The metric's name (column of per-pair frames).</summary>
    public const string Name = "ResNet18PerceptualDistance";

    internal ResNet18PerceptualMetrics(IReadOnlyList<double> scores, IReadOnlyList<string>? keys, ConfidenceInterval? interval)
        : base(Name, scores, keys, interval)
    {
    }

    /// <summary>What the features are, and that the value is not comparable to published LPIPS.</summary>
    public string Backbone => ResNet18Features.Backbone;

    /// <summary>Per-pair distances (<c>Index</c>, <c>Key</c> when known, the distance) and the <c>Backbone</c> label.</summary>
    public new DataFrame ToDataFrame()
    {
        var df = base.ToDataFrame();
        df.Columns.Add(new StringDataFrameColumn("Backbone", Enumerable.Repeat(Backbone, N)));
        return df;
    }

    /// <summary>One-row summary plus the <c>Backbone</c> label.</summary>
    public new DataFrame ToSummaryDataFrame()
    {
        var df = base.ToSummaryDataFrame();
        df.Columns.Add(new StringDataFrameColumn("Backbone", new[] { Backbone }));
        return df;
    }

    /// <inheritdoc />
    public override string ToString() => $"{base.ToString()}; {Backbone}";
}
