using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>FID and KID from features or statistics.</summary>
internal static class FidEvaluator
{
    public static FidMetrics FromStatistics(FeatureStatistics generated, FeatureStatistics reference, FidOptions options)
    {
        ArgumentNullException.ThrowIfNull(generated);
        ArgumentNullException.ThrowIfNull(reference);
        options.Validate();
        var (v, m, t, off) = FrechetDistance.Compute(generated, reference, options.Eps);
        return new FidMetrics(v, m, t, off, generated.Count, reference.Count, generated.Dimension, null);
    }

    public static FidMetrics FromFeatures(Tensor generated, Tensor reference, FidOptions options)
    {
        options.Validate();
        CheckPair(generated, reference);
        var a = FeatureStatistics.FromFeatures(generated, "generated features");
        var b = FeatureStatistics.FromFeatures(reference, "reference features");
        var (v, m, t, off) = FrechetDistance.Compute(a, b, options.Eps);
        ConfidenceInterval? ci = null;
        if (options.BootstrapResamples > 0)
        {
            var rng = new Random(options.Seed);
            var values = new double[options.BootstrapResamples];
            long na = generated.shape[0], nb = reference.shape[0];
            for (int r = 0; r < values.Length; r++)
            {
                using var scope = torch.NewDisposeScope();
                var ia = torch.tensor(Enumerable.Range(0, (int)na).Select(_ => (long)rng.Next((int)na)).ToArray());
                var ib = torch.tensor(Enumerable.Range(0, (int)nb).Select(_ => (long)rng.Next((int)nb)).ToArray());
                var sa = FeatureStatistics.FromFeatures(generated.index_select(0, ia), "generated features");
                var sb = FeatureStatistics.FromFeatures(reference.index_select(0, ib), "reference features");
                values[r] = FrechetDistance.Compute(sa, sb, options.Eps).Value;
            }
            ci = Bootstrap.FromSamples(values, options);
        }
        return new FidMetrics(v, m, t, off, a.Count, b.Count, a.Dimension, ci);
    }

    public static Tensor ToMatrix(IReadOnlyList<float[]> rows, string what)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new ArgumentException($"The {what} are empty.", nameof(rows));
        int d = rows[0].Length;
        if (d == 0) throw new ArgumentException($"The {what} have zero-length rows.", nameof(rows));
        var flat = new float[(long)rows.Count * d];
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Length != d) throw new ArgumentException($"The {what} have {d} values in row 0 but {rows[i].Length} in row {i}.", nameof(rows));
            rows[i].CopyTo(flat, (long)i * d);
        }
        return torch.tensor(flat, new long[] { rows.Count, d });
    }

    private static void CheckPair(Tensor generated, Tensor reference)
    {
        ArgumentNullException.ThrowIfNull(generated);
        ArgumentNullException.ThrowIfNull(reference);
        if (generated.dim() != 2) throw new ArgumentException($"Generated features must be [N, D]; got {Gill.ML.Serialization.SafeTensors.FormatShape(generated.shape)}.", nameof(generated));
        if (reference.dim() != 2) throw new ArgumentException($"Reference features must be [N, D]; got {Gill.ML.Serialization.SafeTensors.FormatShape(reference.shape)}.", nameof(reference));
        if (generated.shape[0] < 2) throw new ArgumentException($"FID needs at least 2 generated samples; got {generated.shape[0]}.", nameof(generated));
        if (reference.shape[0] < 2) throw new ArgumentException($"FID needs at least 2 reference samples; got {reference.shape[0]}.", nameof(reference));
        if (generated.shape[1] != reference.shape[1])
            throw new ArgumentException($"Feature dimensions differ: generated {generated.shape[1]}, reference {reference.shape[1]}.", nameof(reference));
    }

    public static KidMetrics Kid(Tensor generated, Tensor reference, KidOptions options)
    {
        options.Validate();
        CheckPair(generated, reference);
        using var scope = torch.NewDisposeScope();
        var x = generated.detach().to(ScalarType.Float64).cpu();
        var y = reference.detach().to(ScalarType.Float64).cpu();
        foreach (var (t, what) in new[] { (x, "generated"), (y, "reference") })
            if (!t.isfinite().all().item<bool>()) throw new ArgumentException($"The {what} features contain NaN or infinite values.");
        long nx = x.shape[0], ny = y.shape[0];
        int m = (int)Math.Min(options.SubsetSize, Math.Min(nx, ny));
        double gamma = options.Gamma ?? 1.0 / x.shape[1];
        using var gen = new torch.Generator((ulong)options.Seed);
        var values = new double[options.Subsets];
        for (int s = 0; s < options.Subsets; s++)
        {
            using var inner = torch.NewDisposeScope();
            var ix = torch.randperm(nx, generator: gen).narrow(0, 0, m);
            var iy = torch.randperm(ny, generator: gen).narrow(0, 0, m);
            var a = x.index_select(0, ix);
            var b = y.index_select(0, iy);
            var kxx = (a.matmul(a.t()) * gamma + options.Coef0).pow(options.Degree);
            var kyy = (b.matmul(b.t()) * gamma + options.Coef0).pow(options.Degree);
            var kxy = (a.matmul(b.t()) * gamma + options.Coef0).pow(options.Degree);
            double sxx = (kxx.sum() - kxx.diagonal().sum()).item<double>();
            double syy = (kyy.sum() - kyy.diagonal().sum()).item<double>();
            double sxy = kxy.sum().item<double>();
            values[s] = sxx / ((double)m * (m - 1)) + syy / ((double)m * (m - 1)) - 2 * sxy / ((double)m * m);
        }
        ConfidenceInterval? ci = options.BootstrapResamples > 0 && values.Length > 1
            ? Bootstrap.Interval(values.Length, idx => idx.Average(i => values[i]), options)
            : null;
        return new KidMetrics(values, m, nx, ny, ci);
    }
}
