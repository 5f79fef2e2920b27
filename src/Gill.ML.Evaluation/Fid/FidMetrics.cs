using Microsoft.Data.Analysis;

namespace Gill.ML.Evaluation;

/// <summary>Options of the FID evaluator.</summary>
public sealed class FidOptions : BootstrapOptions
{
    /// <summary>Creates options; FID bootstraps are off by default (each resample is a full 2048-d covariance and square root).</summary>
    public FidOptions() => BootstrapResamples = 0;

    /// <summary>Offset added to both covariances when the square root of their product is not finite (pytorch-fid's 1e-6).</summary>
    public double Eps { get; set; } = FrechetDistance.DefaultEps;

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (!(Eps > 0)) throw new ArgumentOutOfRangeException(nameof(Eps), Eps, "Eps must be positive.");
    }
}

/// <summary>
/// Fréchet Inception Distance: the Fréchet distance between Gaussians fitted (float64, N − 1) to the features of the
/// generated and the reference set. FID is a property of two sets; it has no per-example scores.
/// </summary>
public sealed class FidMetrics
{
    internal FidMetrics(double value, double meanTerm, double traceTerm, double offset, long generatedCount, long referenceCount, int dimension, ConfidenceInterval? interval)
    {
        Value = value;
        MeanTerm = meanTerm;
        TraceTerm = traceTerm;
        OffsetApplied = offset;
        N = generatedCount;
        ReferenceCount = referenceCount;
        Dimension = dimension;
        ConfidenceInterval = interval;
    }

    /// <summary>The FID.</summary>
    public double Value { get; }

    /// <summary>‖μ₁ − μ₂‖².</summary>
    public double MeanTerm { get; }

    /// <summary>tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂).</summary>
    public double TraceTerm { get; }

    /// <summary>The eps·I added to both covariances (0 when the product's square root was finite without it).</summary>
    public double OffsetApplied { get; }

    /// <summary>Number of generated samples.</summary>
    public long N { get; }

    /// <summary>Number of reference samples.</summary>
    public long ReferenceCount { get; }

    /// <summary>Feature dimension.</summary>
    public int Dimension { get; }

    /// <summary>Bootstrap interval (both sets resampled), or null when off or computed from saved statistics.</summary>
    public ConfidenceInterval? ConfidenceInterval { get; }

    /// <summary>Summary rows: FID, its mean term and its trace term.</summary>
    public DataFrame ToDataFrame() => new(
        new StringDataFrameColumn("Metric", new[] { "FID", "MeanTerm", "TraceTerm" }),
        new DoubleDataFrameColumn("Value", new[] { Value, MeanTerm, TraceTerm }),
        new Int64DataFrameColumn("N", new[] { N, N, N }),
        new Int64DataFrameColumn("ReferenceCount", new[] { ReferenceCount, ReferenceCount, ReferenceCount }),
        new DoubleDataFrameColumn("CiLower", new[] { ConfidenceInterval?.Lower, null, null }),
        new DoubleDataFrameColumn("CiUpper", new[] { ConfidenceInterval?.Upper, null, null }));

    /// <summary>The same one-row summary shape as the other metrics.</summary>
    public DataFrame ToSummaryDataFrame() => MetricFrames.Summary("FID", Value, (int)Math.Min(int.MaxValue, N), null, ConfidenceInterval);

    /// <inheritdoc />
    public override string ToString() => $"FID = {Value:G8} (N = {N}, reference {ReferenceCount}, d = {Dimension})";
}

/// <summary>Options of the KID estimator.</summary>
public sealed class KidOptions : BootstrapOptions
{
    /// <summary>Number of random subsets (torch-fidelity's and clean-fid's 100).</summary>
    public int Subsets { get; set; } = 100;

    /// <summary>Samples per subset from each set (1000); capped at the smaller set's size.</summary>
    public int SubsetSize { get; set; } = 1000;

    /// <summary>Polynomial kernel degree (3).</summary>
    public int Degree { get; set; } = 3;

    /// <summary>Kernel scale γ; null means 1 / D.</summary>
    public double? Gamma { get; set; }

    /// <summary>Kernel offset (1).</summary>
    public double Coef0 { get; set; } = 1;

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (Subsets < 1) throw new ArgumentOutOfRangeException(nameof(Subsets), Subsets, "Subsets must be at least 1.");
        if (SubsetSize < 2) throw new ArgumentOutOfRangeException(nameof(SubsetSize), SubsetSize, "SubsetSize must be at least 2.");
        if (Degree < 1) throw new ArgumentOutOfRangeException(nameof(Degree), Degree, "Degree must be at least 1.");
        if (Gamma is { } g && !(g > 0)) throw new ArgumentOutOfRangeException(nameof(Gamma), g, "Gamma must be positive.");
    }
}

/// <summary>
/// Kernel Inception Distance: the unbiased MMD² with the polynomial kernel k(x, y) = (γ xᵀy + c)^d, averaged over random
/// subsets. <see cref="SubsetValues"/> holds each subset's estimate.
/// </summary>
public sealed class KidMetrics
{
    internal KidMetrics(double[] subsetValues, int subsetSize, long n, long referenceCount, ConfidenceInterval? interval)
    {
        SubsetValues = subsetValues;
        Value = subsetValues.Average();
        StandardDeviation = subsetValues.Length < 2 ? 0 : Math.Sqrt(subsetValues.Sum(v => (v - Value) * (v - Value)) / subsetValues.Length);
        SubsetSize = subsetSize;
        N = n;
        ReferenceCount = referenceCount;
        ConfidenceInterval = interval;
    }

    /// <summary>Mean of the subset estimates.</summary>
    public double Value { get; }

    /// <summary>Population standard deviation of the subset estimates (as torch-fidelity reports it).</summary>
    public double StandardDeviation { get; }

    /// <summary>The MMD² estimate of each subset.</summary>
    public IReadOnlyList<double> SubsetValues { get; }

    /// <summary>Samples per subset.</summary>
    public int SubsetSize { get; }

    /// <summary>Number of generated samples.</summary>
    public long N { get; }

    /// <summary>Number of reference samples.</summary>
    public long ReferenceCount { get; }

    /// <summary>Percentile interval of the subset estimates, or null when bootstrapping is off.</summary>
    public ConfidenceInterval? ConfidenceInterval { get; }

    /// <summary>Per-subset estimates.</summary>
    public DataFrame ToDataFrame() => new(
        new Int32DataFrameColumn("Subset", Enumerable.Range(0, SubsetValues.Count)),
        new DoubleDataFrameColumn("KID", SubsetValues));

    /// <summary>One-row summary.</summary>
    public DataFrame ToSummaryDataFrame() => MetricFrames.Summary("KID", Value, (int)Math.Min(int.MaxValue, N), StandardDeviation, ConfidenceInterval);

    /// <inheritdoc />
    public override string ToString() => $"KID = {Value:G6} ± {StandardDeviation:G3} ({SubsetValues.Count} subsets of {SubsetSize})";
}
