using Microsoft.Data.Analysis;

namespace Gill.ML.Evaluation;

/// <summary>
/// Common shape of the metrics that average a per-example score (CLIP similarity, LPIPS): the mean, the number of
/// examples, every example's score (with its key, e.g. the file name, when known) and a bootstrap interval of the mean.
/// </summary>
public abstract class PerExampleMetrics
{
    private protected PerExampleMetrics(string metricName, IReadOnlyList<double> scores, IReadOnlyList<string>? keys, ConfidenceInterval? interval)
    {
        if (keys is not null && keys.Count != scores.Count)
            throw new ArgumentException($"{keys.Count} keys were given for {scores.Count} scores.", nameof(keys));
        MetricName = metricName;
        Scores = scores.ToArray();
        Keys = keys?.ToArray();
        N = scores.Count;
        Value = N == 0 ? double.NaN : Scores.Average();
        StandardDeviation = N < 2 ? 0 : Math.Sqrt(Scores.Sum(s => (s - Value) * (s - Value)) / (N - 1));
        ConfidenceInterval = interval;
    }

    /// <summary>Name of the metric (used as the column name of per-example frames).</summary>
    public string MetricName { get; }

    /// <summary>The mean over examples.</summary>
    public double Value { get; }

    /// <summary>Number of examples.</summary>
    public int N { get; }

    /// <summary>Sample standard deviation (N − 1) of the per-example scores.</summary>
    public double StandardDeviation { get; }

    /// <summary>Per-example scores, in input order.</summary>
    public IReadOnlyList<double> Scores { get; }

    /// <summary>Per-example keys (file names, ids), or null when none were given.</summary>
    public IReadOnlyList<string>? Keys { get; }

    /// <summary>Bootstrap interval of <see cref="Value"/>, or null when bootstrapping was off or N &lt; 2.</summary>
    public ConfidenceInterval? ConfidenceInterval { get; }

    /// <summary>Per-example results: <c>Index</c>, <c>Key</c> (when known) and the score column.</summary>
    public DataFrame ToDataFrame()
    {
        var columns = new List<DataFrameColumn> { new Int32DataFrameColumn("Index", Enumerable.Range(0, N)) };
        if (Keys is not null) columns.Add(new StringDataFrameColumn("Key", Keys));
        columns.Add(new DoubleDataFrameColumn(MetricName, Scores));
        return new DataFrame(columns);
    }

    /// <summary>One-row summary: metric, value, N, standard deviation and interval bounds.</summary>
    public DataFrame ToSummaryDataFrame() => MetricFrames.Summary(MetricName, Value, N, StandardDeviation, ConfidenceInterval);

    /// <inheritdoc />
    public override string ToString() => $"{MetricName} = {Value:G6} (N = {N}{(ConfidenceInterval is { } ci ? $", 95% CI {ci}" : "")})";
}

internal static class MetricFrames
{
    public static DataFrame Summary(string metric, double value, int n, double? std, ConfidenceInterval? ci) =>
        Summary(new[] { (metric, value, n, std, ci) });

    public static DataFrame Summary(IEnumerable<(string Metric, double Value, int N, double? Std, ConfidenceInterval? Ci)> rows)
    {
        var list = rows.ToList();
        return new DataFrame(
            new StringDataFrameColumn("Metric", list.Select(r => r.Metric)),
            new DoubleDataFrameColumn("Value", list.Select(r => (double?)r.Value)),
            new Int32DataFrameColumn("N", list.Select(r => (int?)r.N)),
            new DoubleDataFrameColumn("StdDev", list.Select(r => r.Std)),
            new DoubleDataFrameColumn("CiLower", list.Select(r => r.Ci?.Lower)),
            new DoubleDataFrameColumn("CiUpper", list.Select(r => r.Ci?.Upper)));
    }
}
