using System.Text.Json;
using System.Text.RegularExpressions;
using Gill.ML.Evaluation.Lpips;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Evaluation;

/// <summary>The ImageNet trunk of an LPIPS model.</summary>
public enum LpipsNet
{
    /// <summary>AlexNet (LPIPS's default and GILL's evaluation network).</summary>
    Alex,
    /// <summary>VGG16.</summary>
    Vgg,
    /// <summary>SqueezeNet 1.1.</summary>
    Squeeze,
}

/// <summary>Options of the LPIPS evaluator.</summary>
public sealed class LpipsOptions : BootstrapOptions
{
    /// <summary>Side of the square both images are resized to before LPIPS (GILL's evaluation: 256); null keeps sizes (pairs must then match).</summary>
    public int? ResizeTo { get; set; } = 256;

    /// <summary>Antialiased bilinear resizing (torchvision's <c>resize(..., antialias=True)</c>, as GILL's script uses).</summary>
    public bool Antialias { get; set; } = true;

    /// <summary>Pairs per forward pass.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>Device the networks run on (built on CPU, loaded, then moved). Default: CPU.</summary>
    public Device? Device { get; set; }

    /// <summary>Progress (pairs done).</summary>
    public IProgress<int>? Progress { get; set; }

    /// <summary>Cancellation, checked per batch.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (ResizeTo is { } r && r < 16) throw new ArgumentOutOfRangeException(nameof(ResizeTo), r, "ResizeTo must be at least 16 pixels (or null).");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
    }
}

/// <summary>LPIPS: per pair, the learned perceptual distance; <see cref="PerExampleMetrics.Value"/> is the mean (lower is more similar).</summary>
public sealed class LpipsMetrics : PerExampleMetrics
{
    internal LpipsMetrics(LpipsNet net, IReadOnlyList<double> scores, IReadOnlyList<string>? keys, ConfidenceInterval? interval)
        : base("LPIPS", scores, keys, interval) => Net = net;

    /// <summary>The trunk used.</summary>
    public LpipsNet Net { get; }
}

/// <summary>
/// LPIPS v0.1 (Zhang et al. 2018) with an AlexNet, VGG16 or SqueezeNet 1.1 trunk in TorchSharp. The v0.1 linear heads
/// ship with this assembly (BSD-2-Clause); the trunk's ImageNet weights are read from a user-supplied safetensors file.
/// </summary>
/// <remarks>
/// Accepted trunk key layouts: torchvision's whole model (<c>features.N.weight</c>; <c>classifier.*</c> is ignored), its
/// <c>.features</c> module alone (<c>N.weight</c>), or the lpips package's own names (<c>net.sliceK.N.weight</c>).
/// Linear heads come from <c>headsPath</c> when given, else from the trunk file when it holds <c>lin0.model.1.weight</c>,
/// else from the embedded v0.1 heads.
/// </remarks>
public sealed class LpipsModel : IDisposable
{
    private readonly LpipsNetwork _net;
    private readonly LpipsOptions _options;
    private readonly Device _device;

    private LpipsModel(LpipsNet net, LpipsNetwork network, LpipsOptions options)
    {
        Net = net;
        _net = network;
        _options = options;
        _device = options.Device ?? CPU;
        _net.eval();
        _net.to(_device);
    }

    /// <summary>The trunk.</summary>
    public LpipsNet Net { get; }

    /// <summary>Where the linear heads were read from (a path, or <c>embedded:lpips-v0.1/NET</c>).</summary>
    public string HeadsSource { get; private set; } = "";

    /// <summary>Loads an LPIPS model.</summary>
    /// <param name="net">The trunk architecture.</param>
    /// <param name="trunkWeightsPath">Safetensors file with the trunk's ImageNet weights (see remarks for key layouts).</param>
    /// <param name="headsPath">Optional safetensors file with <c>linK.model.1.weight</c>.</param>
    /// <param name="options">Options (device, resizing, batch size).</param>
    public static LpipsModel Load(LpipsNet net, string trunkWeightsPath, string? headsPath = null, LpipsOptions? options = null)
    {
        options ??= new LpipsOptions();
        options.Validate();
        var network = new LpipsNetwork(net);
        try
        {
            string headsSource;
            using (var ck = SafeTensorsCheckpoint.Open(trunkWeightsPath))
            {
                LoadTrunk(network.Trunk, ck);
                if (headsPath is null && ck.Contains("lin0.model.1.weight"))
                {
                    WeightLoader.Load(network.Heads, ck, k => k, inScope: k => k.StartsWith("lin", StringComparison.Ordinal));
                    headsSource = ck.Source;
                }
                else headsSource = "";
            }
            if (headsPath is not null)
            {
                using var hk = SafeTensorsCheckpoint.Open(headsPath);
                WeightLoader.Load(network.Heads, hk, k => k, inScope: k => k.StartsWith("lin", StringComparison.Ordinal));
                headsSource = hk.Source;
            }
            else if (headsSource.Length == 0)
            {
                LoadEmbeddedHeads(network.Heads, net);
                headsSource = $"embedded:lpips-v0.1/{NetName(net)}";
            }
            return new LpipsModel(net, network, options) { HeadsSource = headsSource };
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>A model with seeded random trunk weights and the embedded heads (tests and throughput only).</summary>
    internal static LpipsModel CreateWithRandomTrunk(LpipsNet net, int seed, LpipsOptions? options = null)
    {
        options ??= new LpipsOptions();
        torch.random.manual_seed(seed);
        var network = new LpipsNetwork(net);
        LoadEmbeddedHeads(network.Heads, net);
        return new LpipsModel(net, network, options) { HeadsSource = $"embedded:lpips-v0.1/{NetName(net)}" };
    }

    internal static string NetName(LpipsNet net) => net switch
    {
        LpipsNet.Alex => "alex",
        LpipsNet.Vgg => "vgg",
        LpipsNet.Squeeze => "squeeze",
        _ => throw new ArgumentOutOfRangeException(nameof(net)),
    };

    private static readonly Regex SliceKey = new(@"^net\.slice\d+\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);

    private static void LoadTrunk(LpipsTrunk trunk, SafeTensorsCheckpoint ck)
    {
        var keys = ck.Tensors.Keys.ToList();
        if (keys.Any(k => k.StartsWith("features.", StringComparison.Ordinal)))
        {
            WeightLoader.Load(trunk, ck, k => k, inScope: k => k.StartsWith("features.", StringComparison.Ordinal));
        }
        else if (keys.Any(k => SliceKey.IsMatch(k)))
        {
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var k in keys)
            {
                var m = SliceKey.Match(k);
                if (m.Success) map[$"features.{m.Groups[1].Value}.{m.Groups[2].Value}"] = k;
            }
            WeightLoader.Load(trunk, ck, k => map.TryGetValue(k, out var c) ? c : k, inScope: k => k.StartsWith("net.", StringComparison.Ordinal));
        }
        else if (keys.Any(k => k.Length > 0 && char.IsAsciiDigit(k[0])))
        {
            WeightLoader.Load(trunk, ck, k => k["features.".Length..], inScope: k => k.Length > 0 && char.IsAsciiDigit(k[0]));
        }
        else
        {
            throw new InvalidDataException(
                $"'{ck.Source}' holds no trunk weights in a known layout: expected 'features.N.weight' (torchvision model), 'N.weight' (its .features) or 'net.sliceK.N.weight' (lpips); found e.g. {string.Join(", ", keys.Take(5).Select(k => $"'{k}'"))}.");
        }
    }

    /// <summary>Reads the embedded v0.1 heads (a small F32 safetensors resource) into <paramref name="heads"/>, strictly.</summary>
    private static void LoadEmbeddedHeads(LpipsHeads heads, LpipsNet net)
    {
        var name = $"Gill.ML.Evaluation.Lpips.v0_1.{NetName(net)}.safetensors";
        using var stream = typeof(LpipsModel).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"The embedded LPIPS heads '{name}' are missing from {typeof(LpipsModel).Assembly.GetName().Name}.");
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        var bytes = ms.ToArray();
        long headerLen = BitConverter.ToInt64(bytes, 0);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLen));
        var stored = new Dictionary<string, (long[] Shape, long Begin, long End)>(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            if (p.Value.GetProperty("dtype").GetString() != "F32") throw new InvalidDataException($"Embedded head tensor '{p.Name}' is not F32.");
            var offs = p.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            stored[p.Name] = (p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray(), offs[0], offs[1]);
        }
        long dataStart = 8 + headerLen;
        using var noGrad = torch.no_grad();
        var used = 0;
        foreach (var (key, tensor) in heads.state_dict())
        {
            if (!stored.TryGetValue(key, out var info)) throw new InvalidDataException($"Embedded LPIPS heads '{name}' lack '{key}'.");
            if (!info.Shape.SequenceEqual(tensor.shape))
                throw new InvalidDataException($"Embedded LPIPS head '{key}' is {SafeTensors.FormatShape(info.Shape)}, expected {SafeTensors.FormatShape(tensor.shape)}.");
            var values = new float[(info.End - info.Begin) / 4];
            Buffer.BlockCopy(bytes, (int)(dataStart + info.Begin), values, 0, values.Length * 4);
            using var src = torch.tensor(values, info.Shape);
            tensor.copy_(src);
            used++;
        }
        if (used != stored.Count) throw new InvalidDataException($"Embedded LPIPS heads '{name}' hold {stored.Count} tensors; the {NetName(net)} model uses {used}.");
    }

    /// <summary>
    /// Raw LPIPS distance of two batches <c>[N, 3, H, W]</c> already in [−1, 1] and of equal size (no resizing);
    /// returns <c>[N]</c> float32 on CPU.
    /// </summary>
    public Tensor Distance(Tensor in0, Tensor in1)
    {
        ArgumentNullException.ThrowIfNull(in0);
        ArgumentNullException.ThrowIfNull(in1);
        if (in0.dim() != 4 || in0.shape[1] != 3)
            throw new ArgumentException($"LPIPS input 0 must be [N, 3, H, W]; got {SafeTensors.FormatShape(in0.shape)}.", nameof(in0));
        if (!in0.shape.SequenceEqual(in1.shape))
            throw new ArgumentException($"LPIPS inputs differ in shape: {SafeTensors.FormatShape(in0.shape)} vs {SafeTensors.FormatShape(in1.shape)}.", nameof(in1));
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var d = _net.forward(in0.to(ScalarType.Float32).to(_device), in1.to(ScalarType.Float32).to(_device));
        return d.cpu().MoveToOuterDisposeScope();
    }

    private Tensor Preprocess(Tensor image01, int index, string role)
    {
        try
        {
            ImageChecks.CheckRgb01(image01, index, "LPIPS");
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{role} {e.Message}", e);
        }
        using var scope = NewDisposeScope();
        var x = (image01.to(ScalarType.Float32).to(_device) * 2 - 1).unsqueeze(0);
        if (_options.ResizeTo is { } s && (x.shape[2] != s || x.shape[3] != s))
            x = F.interpolate(x, new long[] { s, s }, mode: InterpolationMode.Bilinear, align_corners: false, antialias: _options.Antialias);
        return x.squeeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// LPIPS of image pairs (each <c>[3, H, W]</c>, float in [0, 1]): both images mapped to [−1, 1] and resized to
    /// <see cref="LpipsOptions.ResizeTo"/> (antialiased bilinear), as GILL's <c>lpips_2dirs.py</c> does.
    /// </summary>
    public double[] Score(IReadOnlyList<Tensor> generated, IReadOnlyList<Tensor> reference)
    {
        ArgumentNullException.ThrowIfNull(generated);
        ArgumentNullException.ThrowIfNull(reference);
        if (generated.Count == 0) throw new ArgumentException("LPIPS needs at least one pair; the generated set is empty.", nameof(generated));
        if (generated.Count != reference.Count)
            throw new ArgumentException($"LPIPS compares pairs: there are {generated.Count} generated images but {reference.Count} reference images.", nameof(reference));
        return ScoreBatches(generated.Count, i => (generated[i], reference[i], false));
    }

    /// <summary>LPIPS of image files paired in order.</summary>
    public double[] ScoreFiles(IReadOnlyList<string> generatedPaths, IReadOnlyList<string> referencePaths)
    {
        ArgumentNullException.ThrowIfNull(generatedPaths);
        ArgumentNullException.ThrowIfNull(referencePaths);
        if (generatedPaths.Count == 0) throw new ArgumentException("LPIPS needs at least one pair; the generated list is empty.", nameof(generatedPaths));
        if (generatedPaths.Count != referencePaths.Count)
            throw new ArgumentException($"LPIPS compares pairs: there are {generatedPaths.Count} generated images but {referencePaths.Count} reference images.", nameof(referencePaths));
        return ScoreBatches(generatedPaths.Count, i =>
        {
            try
            {
                return (ImageFiles.LoadRgb(generatedPaths[i]), ImageFiles.LoadRgb(referencePaths[i]), true);
            }
            catch (Exception e) when (e is InvalidDataException or FileNotFoundException)
            {
                throw new ArgumentException($"Pair {i} ('{generatedPaths[i]}', '{referencePaths[i]}'): {e.Message}", e);
            }
        });
    }

    private double[] ScoreBatches(int count, Func<int, (Tensor A, Tensor B, bool Owned)> get)
    {
        var result = new double[count];
        for (int start = 0; start < count; start += _options.BatchSize)
        {
            _options.CancellationToken.ThrowIfCancellationRequested();
            int n = Math.Min(_options.BatchSize, count - start);
            using var scope = NewDisposeScope();
            var a = new Tensor[n];
            var b = new Tensor[n];
            for (int i = 0; i < n; i++)
            {
                var (x, y, owned) = get(start + i);
                try
                {
                    a[i] = Preprocess(x, start + i, "Generated");
                    b[i] = Preprocess(y, start + i, "Reference");
                }
                finally
                {
                    if (owned) { x.Dispose(); y.Dispose(); }
                }
                if (!a[i].shape.SequenceEqual(b[i].shape))
                    throw new ArgumentException($"LPIPS pair {start + i}: generated image {SafeTensors.FormatShape(a[i].shape)} and reference image {SafeTensors.FormatShape(b[i].shape)} differ in size; set ResizeTo to compare them.");
            }
            bool sameSize = a.All(t => t.shape.SequenceEqual(a[0].shape));
            if (sameSize)
            {
                var d = Distance(torch.stack(a), torch.stack(b));
                var v = d.data<float>().ToArray();
                for (int i = 0; i < n; i++) result[start + i] = v[i];
            }
            else
            {
                for (int i = 0; i < n; i++)
                    result[start + i] = Distance(a[i].unsqueeze(0), b[i].unsqueeze(0)).item<float>();
            }
            _options.Progress?.Report(start + n);
        }
        return result;
    }

    /// <inheritdoc />
    public void Dispose() => _net.Dispose();
}
