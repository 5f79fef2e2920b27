using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Evaluation.Fid;

/// <summary>Convolution (no bias) + BatchNorm (eps 1e-3) + ReLU; keys <c>conv.weight</c>, <c>bn.*</c>.</summary>
internal sealed class BasicConv2d : Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly BatchNorm2d bn;

    public BasicConv2d(long inChannels, long outChannels, (long, long) kernel, (long, long)? stride = null, (long, long)? padding = null)
        : base(nameof(BasicConv2d))
    {
        conv = Conv2d(inChannels, outChannels, kernel, stride: stride ?? (1, 1), padding: padding ?? (0, 0), bias: false);
        bn = BatchNorm2d(outChannels, eps: 0.001);
        RegisterComponents();
    }

    public BasicConv2d(long inChannels, long outChannels, long kernel, long stride = 1, long padding = 0)
        : this(inChannels, outChannels, (kernel, kernel), (stride, stride), (padding, padding))
    {
    }

    public override Tensor forward(Tensor x)
    {
        using var c = conv.forward(x);
        using var b = bn.forward(c);
        return F.relu(b);
    }
}

/// <summary>Average pool 3×3, stride 1, padding 1, excluding the padding from the count (the FID variant).</summary>
internal static class FidPools
{
    public static Tensor AvgPool3x3(Tensor x) =>
        F.avg_pool2d(x, new long[] { 3, 3 }, new long[] { 1, 1 }, new long[] { 1, 1 }, ceil_mode: false, count_include_pad: false);

    public static Tensor MaxPool3x3Stride1(Tensor x) => F.max_pool2d(x, new long[] { 3, 3 }, new long[] { 1, 1 }, new long[] { 1, 1 });

    public static Tensor MaxPool3x3Stride2(Tensor x) => F.max_pool2d(x, new long[] { 3, 3 }, new long[] { 2, 2 });
}

/// <summary>FIDInceptionA (Mixed_5b/5c/5d).</summary>
internal sealed class FidInceptionA : Module<Tensor, Tensor>
{
    private readonly BasicConv2d branch1x1, branch5x5_1, branch5x5_2, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3, branch_pool;

    public FidInceptionA(long inChannels, long poolFeatures) : base(nameof(FidInceptionA))
    {
        branch1x1 = new BasicConv2d(inChannels, 64, 1);
        branch5x5_1 = new BasicConv2d(inChannels, 48, 1);
        branch5x5_2 = new BasicConv2d(48, 64, 5, padding: 2);
        branch3x3dbl_1 = new BasicConv2d(inChannels, 64, 1);
        branch3x3dbl_2 = new BasicConv2d(64, 96, 3, padding: 1);
        branch3x3dbl_3 = new BasicConv2d(96, 96, 3, padding: 1);
        branch_pool = new BasicConv2d(inChannels, poolFeatures, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var b1 = branch1x1.forward(x);
        var b5 = branch5x5_2.forward(branch5x5_1.forward(x));
        var b3 = branch3x3dbl_3.forward(branch3x3dbl_2.forward(branch3x3dbl_1.forward(x)));
        var bp = branch_pool.forward(FidPools.AvgPool3x3(x));
        return torch.cat(new[] { b1, b5, b3, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>InceptionB (Mixed_6a), unchanged from torchvision.</summary>
internal sealed class FidInceptionB : Module<Tensor, Tensor>
{
    private readonly BasicConv2d branch3x3, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3;

    public FidInceptionB(long inChannels) : base(nameof(FidInceptionB))
    {
        branch3x3 = new BasicConv2d(inChannels, 384, 3, stride: 2);
        branch3x3dbl_1 = new BasicConv2d(inChannels, 64, 1);
        branch3x3dbl_2 = new BasicConv2d(64, 96, 3, padding: 1);
        branch3x3dbl_3 = new BasicConv2d(96, 96, 3, stride: 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var b3 = branch3x3.forward(x);
        var bd = branch3x3dbl_3.forward(branch3x3dbl_2.forward(branch3x3dbl_1.forward(x)));
        var bp = FidPools.MaxPool3x3Stride2(x);
        return torch.cat(new[] { b3, bd, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>FIDInceptionC (Mixed_6b…6e).</summary>
internal sealed class FidInceptionC : Module<Tensor, Tensor>
{
    private readonly BasicConv2d branch1x1, branch7x7_1, branch7x7_2, branch7x7_3,
        branch7x7dbl_1, branch7x7dbl_2, branch7x7dbl_3, branch7x7dbl_4, branch7x7dbl_5, branch_pool;

    public FidInceptionC(long inChannels, long c7) : base(nameof(FidInceptionC))
    {
        branch1x1 = new BasicConv2d(inChannels, 192, 1);
        branch7x7_1 = new BasicConv2d(inChannels, c7, 1);
        branch7x7_2 = new BasicConv2d(c7, c7, (1, 7), padding: (0, 3));
        branch7x7_3 = new BasicConv2d(c7, 192, (7, 1), padding: (3, 0));
        branch7x7dbl_1 = new BasicConv2d(inChannels, c7, 1);
        branch7x7dbl_2 = new BasicConv2d(c7, c7, (7, 1), padding: (3, 0));
        branch7x7dbl_3 = new BasicConv2d(c7, c7, (1, 7), padding: (0, 3));
        branch7x7dbl_4 = new BasicConv2d(c7, c7, (7, 1), padding: (3, 0));
        branch7x7dbl_5 = new BasicConv2d(c7, 192, (1, 7), padding: (0, 3));
        branch_pool = new BasicConv2d(inChannels, 192, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var b1 = branch1x1.forward(x);
        var b7 = branch7x7_3.forward(branch7x7_2.forward(branch7x7_1.forward(x)));
        var bd = branch7x7dbl_5.forward(branch7x7dbl_4.forward(branch7x7dbl_3.forward(branch7x7dbl_2.forward(branch7x7dbl_1.forward(x)))));
        var bp = branch_pool.forward(FidPools.AvgPool3x3(x));
        return torch.cat(new[] { b1, b7, bd, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>InceptionD (Mixed_7a), unchanged from torchvision.</summary>
internal sealed class FidInceptionD : Module<Tensor, Tensor>
{
    private readonly BasicConv2d branch3x3_1, branch3x3_2, branch7x7x3_1, branch7x7x3_2, branch7x7x3_3, branch7x7x3_4;

    public FidInceptionD(long inChannels) : base(nameof(FidInceptionD))
    {
        branch3x3_1 = new BasicConv2d(inChannels, 192, 1);
        branch3x3_2 = new BasicConv2d(192, 320, 3, stride: 2);
        branch7x7x3_1 = new BasicConv2d(inChannels, 192, 1);
        branch7x7x3_2 = new BasicConv2d(192, 192, (1, 7), padding: (0, 3));
        branch7x7x3_3 = new BasicConv2d(192, 192, (7, 1), padding: (3, 0));
        branch7x7x3_4 = new BasicConv2d(192, 192, 3, stride: 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var b3 = branch3x3_2.forward(branch3x3_1.forward(x));
        var b7 = branch7x7x3_4.forward(branch7x7x3_3.forward(branch7x7x3_2.forward(branch7x7x3_1.forward(x))));
        var bp = FidPools.MaxPool3x3Stride2(x);
        return torch.cat(new[] { b3, b7, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>FIDInceptionE_1 (Mixed_7b, average pool branch) and FIDInceptionE_2 (Mixed_7c, max pool branch).</summary>
internal sealed class FidInceptionE : Module<Tensor, Tensor>
{
    private readonly BasicConv2d branch1x1, branch3x3_1, branch3x3_2a, branch3x3_2b,
        branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3a, branch3x3dbl_3b, branch_pool;
    private readonly bool _maxPool;

    public FidInceptionE(long inChannels, bool maxPool) : base(nameof(FidInceptionE))
    {
        _maxPool = maxPool;
        branch1x1 = new BasicConv2d(inChannels, 320, 1);
        branch3x3_1 = new BasicConv2d(inChannels, 384, 1);
        branch3x3_2a = new BasicConv2d(384, 384, (1, 3), padding: (0, 1));
        branch3x3_2b = new BasicConv2d(384, 384, (3, 1), padding: (1, 0));
        branch3x3dbl_1 = new BasicConv2d(inChannels, 448, 1);
        branch3x3dbl_2 = new BasicConv2d(448, 384, 3, padding: 1);
        branch3x3dbl_3a = new BasicConv2d(384, 384, (1, 3), padding: (0, 1));
        branch3x3dbl_3b = new BasicConv2d(384, 384, (3, 1), padding: (1, 0));
        branch_pool = new BasicConv2d(inChannels, 192, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var b1 = branch1x1.forward(x);
        var t = branch3x3_1.forward(x);
        var b3 = torch.cat(new[] { branch3x3_2a.forward(t), branch3x3_2b.forward(t) }, 1);
        var d = branch3x3dbl_2.forward(branch3x3dbl_1.forward(x));
        var bd = torch.cat(new[] { branch3x3dbl_3a.forward(d), branch3x3dbl_3b.forward(d) }, 1);
        var pooled = _maxPool ? FidPools.MaxPool3x3Stride1(x) : FidPools.AvgPool3x3(x);
        var bp = branch_pool.forward(pooled);
        return torch.cat(new[] { b1, b3, bd, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The FID InceptionV3 (pt_inception-2015-12-05) up to pool3. Input: <c>[N, 3, 299, 299]</c> already scaled to [−1, 1]
/// (see <see cref="FidFeatureExtractor"/> for the resize and scaling). Output: <c>[N, 2048]</c>. State-dict keys are
/// torchvision's (<c>Conv2d_1a_3x3.conv.weight</c>, <c>Mixed_5b.branch1x1.bn.running_mean</c>, …); the classifier
/// <c>fc.*</c> is not part of it.
/// </summary>
internal sealed class FidInceptionV3 : Module<Tensor, Tensor>
{
    [ComponentName(Name = "Conv2d_1a_3x3")] private readonly BasicConv2d conv1a;
    [ComponentName(Name = "Conv2d_2a_3x3")] private readonly BasicConv2d conv2a;
    [ComponentName(Name = "Conv2d_2b_3x3")] private readonly BasicConv2d conv2b;
    [ComponentName(Name = "Conv2d_3b_1x1")] private readonly BasicConv2d conv3b;
    [ComponentName(Name = "Conv2d_4a_3x3")] private readonly BasicConv2d conv4a;
    [ComponentName(Name = "Mixed_5b")] private readonly FidInceptionA mixed5b;
    [ComponentName(Name = "Mixed_5c")] private readonly FidInceptionA mixed5c;
    [ComponentName(Name = "Mixed_5d")] private readonly FidInceptionA mixed5d;
    [ComponentName(Name = "Mixed_6a")] private readonly FidInceptionB mixed6a;
    [ComponentName(Name = "Mixed_6b")] private readonly FidInceptionC mixed6b;
    [ComponentName(Name = "Mixed_6c")] private readonly FidInceptionC mixed6c;
    [ComponentName(Name = "Mixed_6d")] private readonly FidInceptionC mixed6d;
    [ComponentName(Name = "Mixed_6e")] private readonly FidInceptionC mixed6e;
    [ComponentName(Name = "Mixed_7a")] private readonly FidInceptionD mixed7a;
    [ComponentName(Name = "Mixed_7b")] private readonly FidInceptionE mixed7b;
    [ComponentName(Name = "Mixed_7c")] private readonly FidInceptionE mixed7c;

    /// <summary>Width of the pool3 feature.</summary>
    public const int FeatureSize = 2048;

    public FidInceptionV3() : base(nameof(FidInceptionV3))
    {
        conv1a = new BasicConv2d(3, 32, 3, stride: 2);
        conv2a = new BasicConv2d(32, 32, 3);
        conv2b = new BasicConv2d(32, 64, 3, padding: 1);
        conv3b = new BasicConv2d(64, 80, 1);
        conv4a = new BasicConv2d(80, 192, 3);
        mixed5b = new FidInceptionA(192, 32);
        mixed5c = new FidInceptionA(256, 64);
        mixed5d = new FidInceptionA(288, 64);
        mixed6a = new FidInceptionB(288);
        mixed6b = new FidInceptionC(768, 128);
        mixed6c = new FidInceptionC(768, 160);
        mixed6d = new FidInceptionC(768, 160);
        mixed6e = new FidInceptionC(768, 192);
        mixed7a = new FidInceptionD(768);
        mixed7b = new FidInceptionE(1280, maxPool: false);
        mixed7c = new FidInceptionE(2048, maxPool: true);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        x = conv2b.forward(conv2a.forward(conv1a.forward(x)));
        x = FidPools.MaxPool3x3Stride2(x);
        x = conv4a.forward(conv3b.forward(x));
        x = FidPools.MaxPool3x3Stride2(x);
        x = mixed5d.forward(mixed5c.forward(mixed5b.forward(x)));
        x = mixed6a.forward(x);
        x = mixed6e.forward(mixed6d.forward(mixed6c.forward(mixed6b.forward(x))));
        x = mixed7c.forward(mixed7b.forward(mixed7a.forward(x)));
        x = F.adaptive_avg_pool2d(x, new long[] { 1, 1 });
        return x.flatten(1).MoveToOuterDisposeScope();
    }
}
