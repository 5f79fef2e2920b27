using System.Text.Json;
using Gill.ML.Evaluation;
using Gill.ML.Evaluation.Lpips;
using Gill.ML.Serialization;

namespace Gill.ML.Tests.Evaluation;

/// <summary>The LPIPS trunks' state-dict keys and shapes equal torchvision's feature trunks (References/torchvision-keys.json).</summary>
[TestClass]
public sealed class LpipsTorchvisionKeyTests
{
    [TestMethod]
    [DataRow(LpipsNet.Alex, "alexnet.features")]
    [DataRow(LpipsNet.Vgg, "vgg16.features")]
    [DataRow(LpipsNet.Squeeze, "squeezenet1_1.features")]
    public void TrunkKeysMatchTorchvision(LpipsNet net, string referenceName)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "References", "torchvision-keys.json")));
        var expected = doc.RootElement.GetProperty(referenceName).EnumerateObject()
            .ToDictionary(p => "features." + p.Name, p => "[" + string.Join(", ", p.Value.EnumerateArray().Select(e => e.GetInt64())) + "]");
        using var trunk = LpipsTrunk.Create(net);
        var actual = trunk.state_dict().ToDictionary(kv => kv.Key, kv => SafeTensors.FormatShape(kv.Value.shape));
        // The LPIPS trunk stops at the last tap; torchvision's trunk may have trailing layers without parameters only.
        CollectionAssert.AreEquivalent(expected.Keys.ToList(), actual.Keys.ToList(), $"{net}: key sets differ");
        foreach (var (k, shape) in expected) Assert.AreEqual(shape, actual[k], $"{net}: shape of {k}");
    }
}
