using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>
/// Mean, covariance (unbiased, N − 1) and count of a set of feature vectors, in float64: what the Fréchet distance
/// needs. Save it once for a reference set (<see cref="Save"/>) and reuse it (<see cref="Load"/>).
/// </summary>
public sealed class FeatureStatistics
{
    private readonly double[] _mean;
    private readonly double[] _cov;

    /// <summary>Creates statistics from a mean, a row-major covariance and a count.</summary>
    /// <exception cref="ArgumentException">Sizes disagree, the count is under 2, or a value is not finite.</exception>
    public FeatureStatistics(double[] mean, double[] covarianceRowMajor, long count)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(covarianceRowMajor);
        if (mean.Length == 0) throw new ArgumentException("The feature mean is empty.", nameof(mean));
        if (covarianceRowMajor.Length != (long)mean.Length * mean.Length)
            throw new ArgumentException($"The covariance has {covarianceRowMajor.Length} values; a {mean.Length}-d mean needs {(long)mean.Length * mean.Length}.", nameof(covarianceRowMajor));
        if (count < 2) throw new ArgumentException($"Feature statistics need at least 2 samples (an unbiased covariance divides by N − 1); got {count}.", nameof(count));
        for (int i = 0; i < mean.Length; i++)
            if (!double.IsFinite(mean[i])) throw new ArgumentException($"The feature mean has a non-finite value ({mean[i]}) at index {i}.", nameof(mean));
        for (int i = 0; i < covarianceRowMajor.Length; i++)
            if (!double.IsFinite(covarianceRowMajor[i]))
                throw new ArgumentException($"The covariance has a non-finite value ({covarianceRowMajor[i]}) at [{i / mean.Length}, {i % mean.Length}].", nameof(covarianceRowMajor));
        _mean = (double[])mean.Clone();
        _cov = (double[])covarianceRowMajor.Clone();
        Count = count;
    }

    /// <summary>Number of feature vectors summarised.</summary>
    public long Count { get; }

    /// <summary>Feature dimension.</summary>
    public int Dimension => _mean.Length;

    /// <summary>The mean vector.</summary>
    public IReadOnlyList<double> Mean => _mean;

    /// <summary>One covariance entry.</summary>
    public double Covariance(int row, int column) => _cov[(long)row * _mean.Length + column];

    /// <summary>A copy of the covariance matrix.</summary>
    public double[,] CovarianceMatrix()
    {
        int d = _mean.Length;
        var m = new double[d, d];
        Buffer.BlockCopy(_cov, 0, m, 0, _cov.Length * sizeof(double));
        return m;
    }

    internal Tensor MeanTensor() => torch.tensor(_mean, ScalarType.Float64);

    internal Tensor CovarianceTensor() => torch.tensor(_cov, new long[] { _mean.Length, _mean.Length }, ScalarType.Float64);

    /// <summary>Statistics of the rows of a feature matrix (each row one sample).</summary>
    public static FeatureStatistics FromFeatures(IReadOnlyList<float[]> features, string what = "features")
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.Count < 2) throw new ArgumentException($"FID needs at least 2 {what}; got {features.Count}.", nameof(features));
        int d = features[0].Length;
        using var acc = new FeatureStatisticsAccumulator(d);
        acc.Add(features, what);
        return acc.ToStatistics();
    }

    /// <summary>Statistics of the rows of a <c>[N, D]</c> tensor.</summary>
    public static FeatureStatistics FromFeatures(Tensor features, string what = "features")
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() != 2) throw new ArgumentException($"The {what} must be a matrix [N, D]; got {SafeTensors.FormatShape(features.shape)}.", nameof(features));
        if (features.shape[0] < 2) throw new ArgumentException($"FID needs at least 2 {what}; got {features.shape[0]}.", nameof(features));
        using var acc = new FeatureStatisticsAccumulator((int)features.shape[1]);
        acc.Add(features, what);
        return acc.ToStatistics();
    }

    private const string FormatName = "gill-feature-statistics";

    /// <summary>
    /// Writes the statistics atomically as safetensors: <c>mu</c> F64 [D], <c>sigma</c> F64 [D, D], <c>n</c> I64 [1],
    /// metadata <c>format = gill-feature-statistics</c>.
    /// </summary>
    public void Save(string path, string? description = null)
    {
        using var mu = MeanTensor();
        using var sigma = CovarianceTensor();
        using var n = torch.tensor(new[] { Count }, ScalarType.Int64);
        var meta = new Dictionary<string, string> { ["format"] = FormatName, ["version"] = "1" };
        if (description is not null) meta["description"] = description;
        SafeTensors.Save(path, new[] { KeyValuePair.Create("mu", mu), KeyValuePair.Create("sigma", sigma), KeyValuePair.Create("n", n) }, meta);
    }

    /// <summary>Reads statistics written by <see cref="Save"/>.</summary>
    public static FeatureStatistics Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue("format", out var format) || format != FormatName)
            throw new InvalidDataException($"'{path}' is not a feature statistics file (metadata 'format' is '{format ?? "missing"}', expected '{FormatName}').");
        foreach (var key in new[] { "mu", "sigma", "n" })
            if (!file.Tensors.ContainsKey(key)) throw new InvalidDataException($"Feature statistics file '{path}' has no '{key}' tensor.");
        var muInfo = file.Info("mu");
        if (muInfo.Shape.Length != 1) throw new InvalidDataException($"'{path}': 'mu' must be 1-d, found {muInfo.ShapeText}.");
        int d = (int)muInfo.Shape[0];
        var sigmaInfo = file.Info("sigma");
        if (!sigmaInfo.Shape.SequenceEqual(new long[] { d, d })) throw new InvalidDataException($"'{path}': 'sigma' must be [{d}, {d}] to match 'mu', found {sigmaInfo.ShapeText}.");
        using var mu = file.Load("mu", ScalarType.Float64);
        using var sigma = file.Load("sigma", ScalarType.Float64);
        using var n = file.Load("n", ScalarType.Int64);
        return new FeatureStatistics(mu.data<double>().ToArray(), sigma.contiguous().data<double>().ToArray(), n.view(-1)[0].item<long>());
    }
}

/// <summary>
/// Streaming mean and covariance in float64: batches are merged with the pairwise (Chan et al.) update, so large sets
/// never need to be held in memory and the result equals numpy's <c>np.cov(rowvar=False)</c> on all rows.
/// </summary>
public sealed class FeatureStatisticsAccumulator : IDisposable
{
    private Tensor? _mean;   // [D] float64
    private Tensor? _m2;     // [D, D] float64, sum of centred outer products

    /// <summary>Creates an accumulator for <paramref name="dimension"/>-d features.</summary>
    public FeatureStatisticsAccumulator(int dimension)
    {
        if (dimension < 1) throw new ArgumentOutOfRangeException(nameof(dimension), dimension, "The feature dimension must be positive.");
        Dimension = dimension;
    }

    /// <summary>Feature dimension.</summary>
    public int Dimension { get; }

    /// <summary>Samples added so far.</summary>
    public long Count { get; private set; }

    /// <summary>Adds rows of features.</summary>
    public void Add(IReadOnlyList<float[]> rows, string what = "features")
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) return;
        var flat = new double[(long)rows.Count * Dimension];
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Length != Dimension)
                throw new ArgumentException($"The {what} have {Dimension} values per row, but row {i} has {rows[i].Length}.", nameof(rows));
            for (int j = 0; j < Dimension; j++) flat[(long)i * Dimension + j] = rows[i][j];
        }
        using var t = torch.tensor(flat, new long[] { rows.Count, Dimension }, ScalarType.Float64);
        Add(t, what);
    }

    /// <summary>Adds a batch <c>[N, D]</c> (any float dtype, any device).</summary>
    public void Add(Tensor batch, string what = "features")
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.dim() != 2 || batch.shape[1] != Dimension)
            throw new ArgumentException($"The {what} must be [N, {Dimension}]; got {SafeTensors.FormatShape(batch.shape)}.", nameof(batch));
        long nb = batch.shape[0];
        if (nb == 0) return;
        using var scope = torch.NewDisposeScope();
        var x = batch.detach().to(ScalarType.Float64).cpu();
        if (!x.isfinite().all().item<bool>())
        {
            var bad = x.isfinite().logical_not().nonzero()[0];
            throw new ArgumentException($"The {what} contain a NaN or infinite value (row {Count + bad[0].item<long>()}, column {bad[1].item<long>()}).", nameof(batch));
        }
        var meanB = x.mean(new long[] { 0 });
        var xc = x - meanB;
        var m2B = xc.t().matmul(xc);
        if (_mean is null || _m2 is null)
        {
            _mean = meanB.DetachFromDisposeScope();
            _m2 = m2B.DetachFromDisposeScope();
            Count = nb;
            return;
        }
        long na = Count, n = na + nb;
        var delta = meanB - _mean;
        var newMean = _mean + delta * ((double)nb / n);
        var newM2 = _m2 + m2B + delta.outer(delta) * ((double)na * nb / n);
        _mean.Dispose();
        _m2.Dispose();
        _mean = newMean.DetachFromDisposeScope();
        _m2 = newM2.DetachFromDisposeScope();
        Count = n;
    }

    /// <summary>The statistics of everything added (at least 2 samples).</summary>
    public FeatureStatistics ToStatistics()
    {
        if (_mean is null || _m2 is null || Count < 2)
            throw new InvalidOperationException($"FID needs at least 2 feature vectors; {Count} were added.");
        using var cov = _m2 / (double)(Count - 1);
        return new FeatureStatistics(_mean.data<double>().ToArray(), cov.contiguous().data<double>().ToArray(), Count);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _mean?.Dispose();
        _m2?.Dispose();
        _mean = null;
        _m2 = null;
    }
}
