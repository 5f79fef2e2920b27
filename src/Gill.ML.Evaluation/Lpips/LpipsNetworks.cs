using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Evaluation.Lpips;

/// <summary>SqueezeNet's Fire block (torchvision keys <c>squeeze</c>, <c>expand1x1</c>, <c>expand3x3</c>).</summary>
internal sealed class Fire : Module<Tensor, Tensor>
{
    private readonly Conv2d squeeze, expand1x1, expand3x3;

    public Fire(long inplanes, long squeezePlanes, long expand1x1Planes, long expand3x3Planes) : base(nameof(Fire))
    {
        squeeze = Conv2d(inplanes, squeezePlanes, 1);
        expand1x1 = Conv2d(squeezePlanes, expand1x1Planes, 1);
        expand3x3 = Conv2d(squeezePlanes, expand3x3Planes, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var s = F.relu(squeeze.forward(x));
        return torch.cat(new[] { F.relu(expand1x1.forward(s)), F.relu(expand3x3.forward(s)) }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// An ImageNet trunk as torchvision's <c>.features</c> (keys <c>features.N.weight</c>), run layer by layer with the
/// activations after the LPIPS tap layers returned.
/// </summary>
internal sealed class LpipsTrunk : Module<Tensor, Tensor[]>
{
    private readonly ModuleList<Module<Tensor, Tensor>> features;
    private readonly int[] _taps;

    /// <summary>Channels at each tap.</summary>
    public long[] TapChannels { get; }

    private LpipsTrunk(Module<Tensor, Tensor>[] layers, int[] taps, long[] tapChannels) : base(nameof(LpipsTrunk))
    {
        features = new ModuleList<Module<Tensor, Tensor>>(layers);
        _taps = taps;
        TapChannels = tapChannels;
        RegisterComponents();
    }

    public static LpipsTrunk Create(LpipsNet net) => net switch
    {
        LpipsNet.Alex => Alex(),
        LpipsNet.Vgg => Vgg16(),
        LpipsNet.Squeeze => Squeeze11(),
        _ => throw new ArgumentOutOfRangeException(nameof(net), net, "Unknown LPIPS network."),
    };

    /// <summary>torchvision alexnet().features[0:12]; taps relu1…relu5 after layers 1, 4, 7, 9, 11.</summary>
    private static LpipsTrunk Alex() => new(new Module<Tensor, Tensor>[]
    {
        Conv2d(3, 64, 11, stride: 4, padding: 2), ReLU(), MaxPool2d(3, 2),
        Conv2d(64, 192, 5, padding: 2), ReLU(), MaxPool2d(3, 2),
        Conv2d(192, 384, 3, padding: 1), ReLU(),
        Conv2d(384, 256, 3, padding: 1), ReLU(),
        Conv2d(256, 256, 3, padding: 1), ReLU(),
    }, new[] { 1, 4, 7, 9, 11 }, new long[] { 64, 192, 384, 256, 256 });

    /// <summary>torchvision vgg16().features[0:30]; taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 after layers 3, 8, 15, 22, 29.</summary>
    private static LpipsTrunk Vgg16()
    {
        var layers = new List<Module<Tensor, Tensor>>();
        long inCh = 3;
        foreach (var v in new[] { 64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512 })
        {
            if (v < 0) { layers.Add(MaxPool2d(2, 2)); continue; }
            layers.Add(Conv2d(inCh, v, 3, padding: 1));
            layers.Add(ReLU());
            inCh = v;
        }
        return new LpipsTrunk(layers.ToArray(), new[] { 3, 8, 15, 22, 29 }, new long[] { 64, 128, 256, 512, 512 });
    }

    /// <summary>torchvision squeezenet1_1().features[0:13]; the 7 LPIPS taps after layers 1, 4, 7, 9, 10, 11, 12.</summary>
    private static LpipsTrunk Squeeze11() => new(new Module<Tensor, Tensor>[]
    {
        Conv2d(3, 64, 3, stride: 2), ReLU(), MaxPool2d(3, 2, ceil_mode: true),
        new Fire(64, 16, 64, 64), new Fire(128, 16, 64, 64), MaxPool2d(3, 2, ceil_mode: true),
        new Fire(128, 32, 128, 128), new Fire(256, 32, 128, 128), MaxPool2d(3, 2, ceil_mode: true),
        new Fire(256, 48, 192, 192), new Fire(384, 48, 192, 192), new Fire(384, 64, 256, 256), new Fire(512, 64, 256, 256),
    }, new[] { 1, 4, 7, 9, 10, 11, 12 }, new long[] { 64, 128, 256, 384, 384, 512, 512 });

    /// <summary>Runs the layers up to the last tap; intermediate tensors belong to the caller's dispose scope.</summary>
    public override Tensor[] forward(Tensor x)
    {
        var outs = new Tensor[_taps.Length];
        int next = 0;
        var h = x;
        for (int i = 0; i <= _taps[^1]; i++)
        {
            h = features[i].forward(h);
            if (i == _taps[next]) outs[next++] = h;
        }
        return outs;
    }
}

/// <summary>LPIPS's NetLinLayer: Dropout then a bias-free 1×1 convolution to one channel (keys <c>model.1.weight</c>).</summary>
internal sealed class NetLinLayer : Module<Tensor, Tensor>
{
    private readonly Sequential model;

    public NetLinLayer(long channels) : base(nameof(NetLinLayer))
    {
        model = Sequential(("0", Dropout(0.5)), ("1", Conv2d(channels, 1, 1, bias: false)));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => model.forward(x);
}

/// <summary>The learned linear heads <c>lin0 … linK</c>.</summary>
internal sealed class LpipsHeads : nn.Module
{
    private readonly List<NetLinLayer> _heads = new();

    public LpipsHeads(IReadOnlyList<long> channels) : base(nameof(LpipsHeads))
    {
        for (int i = 0; i < channels.Count; i++)
        {
            var head = new NetLinLayer(channels[i]);
            _heads.Add(head);
            register_module($"lin{i}", head);
        }
    }

    public NetLinLayer this[int index] => _heads[index];

    public int Count => _heads.Count;
}

/// <summary>
/// LPIPS v0.1 distance (the lpips package with <c>lpips=True</c>, <c>spatial=False</c>): inputs in [−1, 1] go through
/// the scaling layer ((x − shift) / scale), the trunk, channel normalisation x / (√Σx² + 1e-10), squared difference,
/// the 1×1 heads, a spatial mean, and a sum over taps. Returns one distance per pair, <c>[N]</c>.
/// </summary>
internal sealed class LpipsNetwork : Module<Tensor, Tensor, Tensor>
{
    private readonly LpipsTrunk trunk;
    private readonly LpipsHeads heads;

    /// <summary>The scaling layer's constants (buffers <c>shift</c>/<c>scale</c> in the lpips package).</summary>
    public static readonly double[] Shift = { -0.030, -0.088, -0.188 };
    public static readonly double[] Scale = { 0.458, 0.448, 0.450 };
    public const double NormEps = 1e-10;

    public LpipsNetwork(LpipsNet net) : base(nameof(LpipsNetwork))
    {
        trunk = LpipsTrunk.Create(net);
        heads = new LpipsHeads(trunk.TapChannels);
        RegisterComponents();
    }

    public LpipsTrunk Trunk => trunk;

    public LpipsHeads Heads => heads;

    public override Tensor forward(Tensor in0, Tensor in1)
    {
        using var scope = NewDisposeScope();
        var shift = torch.tensor(Shift, ScalarType.Float32, in0.device).view(1, 3, 1, 1).to(in0.dtype);
        var scale = torch.tensor(Scale, ScalarType.Float32, in0.device).view(1, 3, 1, 1).to(in0.dtype);
        var f0 = trunk.forward((in0 - shift) / scale);
        var f1 = trunk.forward((in1 - shift) / scale);
        Tensor? total = null;
        for (int k = 0; k < f0.Length; k++)
        {
            var n0 = f0[k] / (f0[k].pow(2).sum(1, keepdim: true).sqrt() + NormEps);
            var n1 = f1[k] / (f1[k].pow(2).sum(1, keepdim: true).sqrt() + NormEps);
            var d = (n0 - n1).pow(2);
            var res = heads[k].forward(d).mean(new long[] { 2, 3 }, keepdim: false).view(-1);
            total = total is null ? res : total + res;
        }
        return total!.MoveToOuterDisposeScope();
    }
}
