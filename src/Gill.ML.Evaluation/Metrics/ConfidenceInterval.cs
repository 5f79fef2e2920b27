namespace Gill.ML.Evaluation;

/// <summary>
/// A percentile bootstrap confidence interval: the statistic recomputed on <see cref="Resamples"/> resamples (with
/// replacement) of the examples, drawn from a seeded generator, and the (1 − level)/2 and (1 + level)/2 quantiles taken.
/// </summary>
/// <param name="Lower">Lower bound.</param>
/// <param name="Upper">Upper bound.</param>
/// <param name="Level">Coverage, e.g. 0.95.</param>
/// <param name="Resamples">Number of bootstrap resamples.</param>
/// <param name="Seed">Seed of the resampling generator.</param>
public readonly record struct ConfidenceInterval(double Lower, double Upper, double Level, int Resamples, int Seed)
{
    /// <summary>Formats the interval as <c>[lower, upper]</c>.</summary>
    public override string ToString() => $"[{Lower:G6}, {Upper:G6}] ({Level:P0}, {Resamples} resamples)";
}

/// <summary>Bootstrap settings shared by all evaluators.</summary>
public class BootstrapOptions
{
    /// <summary>Defaults shared with the catalog.</summary>
    internal static class Defaults
    {
        public const int Resamples = 1000;
        public const int Seed = 42;
        public const double Level = 0.95;
    }

    /// <summary>Number of bootstrap resamples for the confidence interval; 0 disables it.</summary>
    public int BootstrapResamples { get; set; } = Defaults.Resamples;

    /// <summary>Seed of the bootstrap generator (the same seed gives the same interval).</summary>
    public int Seed { get; set; } = Defaults.Seed;

    /// <summary>Coverage of the interval, in (0, 1).</summary>
    public double ConfidenceLevel { get; set; } = Defaults.Level;

    /// <summary>Throws when a setting is out of range.</summary>
    public virtual void Validate()
    {
        if (BootstrapResamples < 0)
            throw new ArgumentOutOfRangeException(nameof(BootstrapResamples), BootstrapResamples, "BootstrapResamples must be 0 (off) or positive.");
        if (!(ConfidenceLevel > 0 && ConfidenceLevel < 1))
            throw new ArgumentOutOfRangeException(nameof(ConfidenceLevel), ConfidenceLevel, "ConfidenceLevel must lie strictly between 0 and 1.");
    }
}

/// <summary>Percentile bootstrap over examples.</summary>
internal static class Bootstrap
{
    /// <summary>
    /// Recomputes <paramref name="statistic"/> on resampled index sets (each of length <paramref name="n"/>, drawn with
    /// replacement) and returns the percentile interval, or null when resampling is off or there is one example.
    /// </summary>
    public static ConfidenceInterval? Interval(int n, Func<int[], double> statistic, BootstrapOptions options)
    {
        options.Validate();
        if (options.BootstrapResamples == 0 || n < 2) return null;
        var rng = new Random(options.Seed);
        var values = new double[options.BootstrapResamples];
        var idx = new int[n];
        for (int r = 0; r < values.Length; r++)
        {
            for (int i = 0; i < n; i++) idx[i] = rng.Next(n);
            values[r] = statistic(idx);
        }
        return FromSamples(values, options);
    }

    /// <summary>Interval of the mean of per-example scores.</summary>
    public static ConfidenceInterval? MeanInterval(IReadOnlyList<double> scores, BootstrapOptions options) =>
        Interval(scores.Count, idx =>
        {
            double s = 0;
            foreach (var i in idx) s += scores[i];
            return s / idx.Length;
        }, options);

    /// <summary>Percentile interval from already computed bootstrap values.</summary>
    public static ConfidenceInterval FromSamples(double[] values, BootstrapOptions options)
    {
        var sorted = values.Where(v => !double.IsNaN(v)).OrderBy(v => v).ToArray();
        if (sorted.Length == 0) return new ConfidenceInterval(double.NaN, double.NaN, options.ConfidenceLevel, values.Length, options.Seed);
        double alpha = (1 - options.ConfidenceLevel) / 2;
        return new ConfidenceInterval(Quantile(sorted, alpha), Quantile(sorted, 1 - alpha), options.ConfidenceLevel, values.Length, options.Seed);
    }

    /// <summary>Linear-interpolation quantile of a sorted sample (numpy's default method).</summary>
    public static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
    }
}
