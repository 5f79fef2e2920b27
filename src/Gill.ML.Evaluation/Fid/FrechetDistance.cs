using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>The Fréchet distance between two Gaussians, computed in float64.</summary>
/// <remarks>
/// d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂). The trace of the square root is taken through the symmetric
/// matrix M = √Σ₁ Σ₂ √Σ₁, which has the same eigenvalues as Σ₁Σ₂ (both covariances are symmetric positive
/// semi-definite): tr √(Σ₁Σ₂) = Σᵢ √λᵢ(M). √Σ₁ comes from a symmetric eigen-decomposition; round-off eigenvalues below
/// zero are clamped to zero, which is the real part that scipy's <c>sqrtm</c> keeps. If the decomposition fails or gives
/// non-finite values, eps·I is added to both covariances and the computation retried, as pytorch-fid
/// does.
/// </remarks>
internal static class FrechetDistance
{
    public const double DefaultEps = 1e-6;

    public static (double Value, double MeanTerm, double TraceTerm, double Offset) Compute(FeatureStatistics a, FeatureStatistics b, double eps = DefaultEps)
    {
        if (a.Dimension != b.Dimension)
            throw new ArgumentException($"Feature dimensions differ: {a.Dimension} for the generated set and {b.Dimension} for the reference set.");
        using var scope = torch.NewDisposeScope();
        var mu1 = a.MeanTensor();
        var mu2 = b.MeanTensor();
        var s1 = a.CovarianceTensor();
        var s2 = b.CovarianceTensor();
        var diff = mu1 - mu2;
        double meanTerm = diff.dot(diff).item<double>();
        double offset = 0;
        double trSqrt = TraceSqrtProduct(s1, s2);
        if (!double.IsFinite(trSqrt))
        {
            offset = eps;
            var eye = torch.eye(a.Dimension, dtype: ScalarType.Float64) * eps;
            trSqrt = TraceSqrtProduct(s1 + eye, s2 + eye);
            if (!double.IsFinite(trSqrt))
                throw new ArithmeticException($"The matrix square root of the covariance product is not finite even after adding {eps}·I.");
        }
        double traceTerm = s1.trace().item<double>() + s2.trace().item<double>() - 2 * trSqrt;
        return (meanTerm + traceTerm, meanTerm, traceTerm, offset);
    }

    /// <summary>tr √(S1·S2) for symmetric PSD S1, S2; NaN when the decomposition fails.</summary>
    internal static double TraceSqrtProduct(Tensor s1, Tensor s2)
    {
        using var scope = torch.NewDisposeScope();
        try
        {
            var sym1 = (s1 + s1.t()) * 0.5;
            var (l1, v1) = torch.linalg.eigh(sym1);
            var sqrtS1 = (v1 * l1.clamp_min(0).sqrt().unsqueeze(0)).matmul(v1.t());
            var m = sqrtS1.matmul(s2).matmul(sqrtS1);
            m = (m + m.t()) * 0.5;
            var lm = torch.linalg.eigvalsh(m);
            if (!lm.isfinite().all().item<bool>()) return double.NaN;
            return lm.clamp_min(0).sqrt().sum().item<double>();
        }
        catch (ExternalException)
        {
            return double.NaN;
        }
    }
}
