using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

[assembly: DoNotParallelize]

namespace Gill.ML.Tests;

/// <summary>Access to the PyTorch-computed fixtures copied into the test output (fixtures/NAME).</summary>
internal static class Fixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "fixtures");

    /// <summary>Folder of a fixture copied into the repository.</summary>
    public static string Dir(string name)
    {
        var p = Path.Combine(Root, name);
        if (!Directory.Exists(p)) throw new DirectoryNotFoundException($"Fixture folder missing: {p}");
        return p;
    }

    /// <summary>
    /// A fixture that is only used from ../shared (too large to copy): returns its folder, or marks the test inconclusive.
    /// </summary>
    public static string SharedDir(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            var candidate = Path.Combine(dir.FullName, "..", "shared", "fixtures", name);
            if (Directory.Exists(candidate)) return Path.GetFullPath(candidate);
            dir = dir.Parent;
        }
        Assert.Inconclusive($"Shared fixture '{name}' not found beside the checkout (../shared/fixtures/{name}).");
        return "";
    }

    /// <summary>Loads fixtures/NAME/io.safetensors (inputs and PyTorch outputs).</summary>
    public static Dictionary<string, Tensor> Io(string name) => SafeTensors.LoadAll(Path.Combine(Dir(name), "io.safetensors"));

    /// <summary>The fixtures' float32 forward tolerance: max |ours − ref| ≤ 1e-4 × (1 + max|ref|).</summary>
    public static void AssertClose(Tensor expected, Tensor actual, string what, double rel = 1e-4)
    {
        CollectionAssert.AreEqual(expected.shape, actual.shape, $"{what}: shape {SafeTensors.FormatShape(actual.shape)} != expected {SafeTensors.FormatShape(expected.shape)}");
        using var e = expected.to(ScalarType.Float64).cpu();
        using var a = actual.detach().to(ScalarType.Float64).cpu();
        double maxRef = e.abs().max().item<double>();
        double maxDiff = (e - a).abs().max().item<double>();
        double tol = rel * (1 + maxRef);
        Assert.IsTrue(maxDiff <= tol, $"{what}: max |diff| {maxDiff:E3} > tolerance {tol:E3} (max|ref| {maxRef:G4})");
    }

    /// <summary>Losses: within 1e-5 relative.</summary>
    public static void AssertLoss(double expected, double actual, string what, double rel = 1e-5)
    {
        double tol = rel * Math.Max(1e-12, Math.Abs(expected));
        Assert.IsTrue(Math.Abs(expected - actual) <= tol, $"{what}: {actual:R} != expected {expected:R} (tolerance {tol:E2})");
    }
}
